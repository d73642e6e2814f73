//! [`Tx`]: one transaction over the records of one scope, and every query the handlers make
//! beyond plain records (counts, loads, task lookups, events, agent bookkeeping), written once
//! in the SQL both backends run.

use std::collections::HashMap;

use super::records::{scoped, Filter};
use super::sql::{Param, Sql};
use super::{ClusterCounts, FamilyStatus, NewTask, StoreError, TaskFilter};
use crate::domain::placement::{InstanceLoad, Reservation, Usage};
use crate::domain::records::{Cluster, ContainerInstance, StoredTaskDefinition, Task};
use crate::domain::status::{ContainerInstanceStatus, TaskDefinitionStatus, TaskStatus};
use crate::domain::Scope;

/// One transaction over the resources of one scope. Lists are ordered by key and resume after
/// the `after` key, so pagination tokens stay valid while other records come and go.
pub struct Tx<'a> {
    pub(super) sql: &'a mut dyn Sql,
    pub(super) scope: Scope,
    /// The one cluster a write bound by [`super::Hold::Cluster`] may reach.
    pub(super) bound: Option<String>,
    /// The usage documents of instances this transaction read in bulk ([`Tx::cluster_loads`]),
    /// by cluster and instance: [`Tx::usage`] of one of them reads nothing more.
    usage_seen: HashMap<(String, String), String>,
}

/// The read of one instance's usage, by account, region, cluster and instance.
const USAGE: &str =
    "SELECT doc FROM instance_usage WHERE account = $1 AND region = $2 AND cluster = $3 AND instance = $4";
/// Every instance's usage of a cluster, by account, region and cluster.
const CLUSTER_USAGE: &str =
    "SELECT instance, doc FROM instance_usage WHERE account = $1 AND region = $2 AND cluster = $3";

fn limit(n: usize) -> Param<'static> {
    Param::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

impl<'a> Tx<'a> {
    pub fn new(sql: &'a mut dyn Sql, scope: Scope) -> Self {
        Tx::bound(sql, scope, None)
    }

    /// A transaction that may reach only `bound`'s records, if it is given, and read (not
    /// change) the scope's own: what a write holding [`super::Hold::Cluster`] holds.
    pub fn bound(sql: &'a mut dyn Sql, scope: Scope, bound: Option<String>) -> Self {
        Tx {
            sql,
            scope,
            bound,
            usage_seen: HashMap::new(),
        }
    }

    /// Refuses to reach `cluster` if the transaction is bound to another: the hold it runs
    /// under would not cover it.
    pub(super) fn reach(&self, cluster: &str) -> Result<(), StoreError> {
        match &self.bound {
            Some(bound) if bound != cluster => Err(StoreError::Unheld {
                bound: bound.clone(),
                reached: format!("cluster {cluster:?}"),
            }),
            _ => Ok(()),
        }
    }

    /// Refuses, in a transaction bound to one cluster, what reaches beyond it: every cluster
    /// at once, or a change to the scope's own records.
    pub(super) fn reach_beyond(&self, what: &str) -> Result<(), StoreError> {
        match &self.bound {
            Some(bound) => Err(StoreError::Unheld {
                bound: bound.clone(),
                reached: what.to_owned(),
            }),
            None => Ok(()),
        }
    }

    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// Runs a statement with the scope's account and region as `$1` and `$2`, then `params`.
    fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<super::sql::Row>, StoreError> {
        let all = scoped(&self.scope, params);
        self.sql.query(sql, &all)
    }

    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, StoreError> {
        let all = scoped(&self.scope, params);
        self.sql.execute(sql, &all)
    }

    /// [`Tx::execute`] of a statement nothing waits for ([`super::sql::Sql::execute_later`]).
    fn execute_later(&mut self, sql: &str, params: &[Param<'_>]) -> Result<(), StoreError> {
        let all = scoped(&self.scope, params);
        self.sql.execute_later(sql, &all)
    }

    pub fn cluster(&mut self, name: &str) -> Result<Option<Cluster>, StoreError> {
        self.get(&[name.into()])
    }

    /// ACTIVE clusters.
    pub fn list_clusters(&mut self, after: Option<&str>, n: usize) -> Result<Vec<Cluster>, StoreError> {
        self.list(&[], &[Filter::Eq("status", "ACTIVE".into())], after, n)
    }

    pub fn cluster_counts(&mut self, cluster: &str) -> Result<ClusterCounts, StoreError> {
        self.reach(cluster)?;
        let registered = self
            .query(
                "SELECT COUNT(*) FROM container_instances
                 WHERE account = $1 AND region = $2 AND cluster = $3 AND status IN ('ACTIVE', 'DRAINING')",
                &[cluster.into()],
            )?
            .first()
            .map_or(Ok(0), |r| r.int(0))?;
        let mut counts = ClusterCounts {
            registered_container_instances: registered,
            ..Default::default()
        };
        for row in self.query(
            "SELECT COALESCE(launch_type, 'EC2'), status, COUNT(*) FROM services
             WHERE account = $1 AND region = $2 AND cluster = $3 AND status IN ('ACTIVE', 'DRAINING')
             GROUP BY launch_type, status",
            &[cluster.into()],
        )? {
            let (launch_type, status, n) = (row.text(0)?.to_owned(), row.text(1)?.to_owned(), row.int(2)?);
            if status == "ACTIVE" {
                counts.active_services += n;
            }
            counts.services_by_launch_type.push((launch_type, status, n));
        }
        for row in self.query(
            "SELECT last_status, COALESCE(launch_type, 'EC2'), COUNT(*) FROM tasks
             WHERE account = $1 AND region = $2 AND cluster = $3 AND last_status <> 'STOPPED'
             GROUP BY last_status, launch_type",
            &[cluster.into()],
        )? {
            if let Some(status) = TaskStatus::parse(row.text(0)?) {
                counts.add(status, row.text(1)?, row.int(2)?);
            }
        }
        Ok(counts)
    }

    pub fn task_definition(&mut self, family: &str, revision: i64) -> Result<Option<StoredTaskDefinition>, StoreError> {
        self.get(&[family.into(), revision.into()])
    }

    /// The newest ACTIVE revision of a family.
    pub fn latest_task_definition(&mut self, family: &str) -> Result<Option<StoredTaskDefinition>, StoreError> {
        let params = scoped(&self.scope, &[family.into()]);
        self.sql
            .reads_of(&[(
                "task_definitions",
                "SELECT doc FROM task_definitions WHERE account = $1 AND region = $2 AND family = $3 AND status = 'ACTIVE'
                 ORDER BY revision DESC LIMIT 1",
                &params,
            )])?
            .pop()
            .unwrap_or_default()
            .first()
            .map(|r| r.doc(0))
            .transpose()
    }

    /// The highest revision ever registered in a family (0 if none), active or not.
    pub fn last_revision(&mut self, family: &str) -> Result<i64, StoreError> {
        self.query(
            "SELECT COALESCE(MAX(revision), 0) FROM task_definitions WHERE account = $1 AND region = $2 AND family = $3",
            &[family.into()],
        )?
        .first()
        .map_or(Ok(0), |r| r.int(0))
    }

    /// (family, revision) of the definitions in `status` whose family starts with the prefix,
    /// ordered by family then revision, resuming after `after`.
    pub fn list_task_definitions(
        &mut self,
        family_prefix: Option<&str>,
        status: TaskDefinitionStatus,
        descending: bool,
        after: Option<(&str, i64)>,
        n: usize,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        // Two statements rather than a dynamic ORDER BY, so both stay prepared.
        let sql = if descending {
            "SELECT family, revision FROM task_definitions
             WHERE account = $1 AND region = $2 AND status = $3 AND substr(family, 1, length(CAST($4 AS TEXT))) = $4
               AND (CAST($5 AS TEXT) IS NULL OR family < $5 OR (family = $5 AND revision < $6))
             ORDER BY family DESC, revision DESC LIMIT $7"
        } else {
            "SELECT family, revision FROM task_definitions
             WHERE account = $1 AND region = $2 AND status = $3 AND substr(family, 1, length(CAST($4 AS TEXT))) = $4
               AND (CAST($5 AS TEXT) IS NULL OR family > $5 OR (family = $5 AND revision > $6))
             ORDER BY family, revision LIMIT $7"
        };
        self.query(
            sql,
            &[
                status.as_str().into(),
                family_prefix.unwrap_or("").into(),
                after.map(|a| a.0).into(),
                after.map_or(0, |a| a.1).into(),
                limit(n),
            ],
        )?
        .iter()
        .map(|r| Ok((r.text(0)?.to_owned(), r.int(1)?)))
        .collect()
    }

    pub fn list_task_definition_families(
        &mut self,
        family_prefix: Option<&str>,
        status: FamilyStatus,
        after: Option<&str>,
        n: usize,
    ) -> Result<Vec<String>, StoreError> {
        let sql = match status {
            FamilyStatus::Active => {
                "SELECT family FROM task_definitions
                 WHERE account = $1 AND region = $2 AND substr(family, 1, length(CAST($3 AS TEXT))) = $3 AND family > $4
                 GROUP BY family HAVING MAX(CASE WHEN status = 'ACTIVE' THEN 1 ELSE 0 END) = 1
                 ORDER BY family LIMIT $5"
            }
            FamilyStatus::Inactive => {
                "SELECT family FROM task_definitions
                 WHERE account = $1 AND region = $2 AND substr(family, 1, length(CAST($3 AS TEXT))) = $3 AND family > $4
                 GROUP BY family HAVING MAX(CASE WHEN status = 'ACTIVE' THEN 1 ELSE 0 END) = 0
                 ORDER BY family LIMIT $5"
            }
            FamilyStatus::All => {
                "SELECT family FROM task_definitions
                 WHERE account = $1 AND region = $2 AND substr(family, 1, length(CAST($3 AS TEXT))) = $3 AND family > $4
                 GROUP BY family ORDER BY family LIMIT $5"
            }
        };
        self.query(
            sql,
            &[family_prefix.unwrap_or("").into(), after.unwrap_or("").into(), limit(n)],
        )?
        .iter()
        .map(|r| Ok(r.text(0)?.to_owned()))
        .collect()
    }

    pub fn container_instance(&mut self, cluster: &str, id: &str) -> Result<Option<ContainerInstance>, StoreError> {
        self.get(&[cluster.into(), id.into()])
    }

    /// The instances in `status`; with none, those in every status but INACTIVE
    /// (deregistered instances are found only by ARN).
    pub fn list_container_instances(
        &mut self,
        cluster: &str,
        status: Option<ContainerInstanceStatus>,
        after: Option<&str>,
        n: usize,
    ) -> Result<Vec<ContainerInstance>, StoreError> {
        let filter = match status {
            Some(status) => Filter::Eq("status", status.as_str().into()),
            None => Filter::Ne("status", ContainerInstanceStatus::Inactive.as_str().into()),
        };
        self.list(&[cluster.into()], &[filter], after, n)
    }

    /// What the tasks placed on an instance hold, by the accounting of [`Usage`].
    pub fn usage(&mut self, cluster: &str, instance: &str) -> Result<Usage, StoreError> {
        self.reach(cluster)?;
        if let Some(doc) = self.usage_seen.get(&(cluster.to_owned(), instance.to_owned())) {
            return Ok(serde_json::from_str(doc)?);
        }
        let params = scoped(&self.scope, &[cluster.into(), instance.into()]);
        let found = self.sql.read_records(&[(USAGE, &params)])?.pop().flatten();
        found.map_or(Ok(Usage::default()), |doc| Ok(serde_json::from_str(&doc)?))
    }

    pub fn put_usage(&mut self, cluster: &str, instance: &str, usage: &Usage) -> Result<(), StoreError> {
        self.reach(cluster)?;
        let doc = serde_json::to_string(usage)?;
        self.execute_later(
            "INSERT INTO instance_usage (account, region, cluster, instance, doc) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (account, region, cluster, instance) DO UPDATE SET doc = excluded.doc",
            &[cluster.into(), instance.into(), doc.as_str().into()],
        )?;
        let params = scoped(&self.scope, &[cluster.into(), instance.into()]);
        self.sql.holds("instance_usage", USAGE, &params, Some(&doc));
        self.usage_seen.remove(&(cluster.to_owned(), instance.to_owned()));
        Ok(())
    }

    /// What the tasks placed on an instance hold, summed over those not yet STOPPED.
    pub fn instance_load(&mut self, cluster: &str, id: &str) -> Result<InstanceLoad, StoreError> {
        Ok(self.usage(cluster, id)?.load())
    }

    /// [`Tx::instance_load`] of every instance of a cluster that holds anything, in one read.
    pub fn cluster_loads(&mut self, cluster: &str) -> Result<HashMap<String, InstanceLoad>, StoreError> {
        self.reach(cluster)?;
        let rows = self.query(CLUSTER_USAGE, &[cluster.into()])?;
        self.loads(cluster, rows)
    }

    /// The loads of [`CLUSTER_USAGE`]'s rows, whose documents the transaction keeps.
    fn loads(
        &mut self,
        cluster: &str,
        rows: Vec<super::sql::Row>,
    ) -> Result<HashMap<String, InstanceLoad>, StoreError> {
        let mut loads = HashMap::with_capacity(rows.len());
        for row in rows {
            let (instance, doc) = (row.text(0)?.to_owned(), row.text(1)?);
            loads.insert(instance.clone(), serde_json::from_str::<Usage>(doc)?.load());
            self.usage_seen.insert((cluster.to_owned(), instance), doc.to_owned());
        }
        Ok(loads)
    }

    /// The instances of a cluster in `status` ([`Tx::list_container_instances`]) with the
    /// loads of the cluster ([`Tx::cluster_loads`]), read at once.
    pub fn instances_and_loads(
        &mut self,
        cluster: &str,
        status: ContainerInstanceStatus,
    ) -> Result<(Vec<ContainerInstance>, HashMap<String, InstanceLoad>), StoreError> {
        self.reach(cluster)?;
        let scope_and_cluster = scoped(&self.scope, &[cluster.into()]);
        let prefix = [Param::Text(cluster)];
        let filter = [Filter::Eq("status", status.as_str().into())];
        let (list, params) = super::records::select_statement::<ContainerInstance>(
            &self.scope,
            "doc",
            &prefix,
            &filter,
            None,
            usize::MAX,
        );
        let mut answers = self
            .sql
            .reads_of(&[
                ("container_instances", &list, &params),
                ("instance_usage", CLUSTER_USAGE, &scope_and_cluster),
            ])?
            .into_iter();
        let (instances, usage) = (answers.next().unwrap_or_default(), answers.next().unwrap_or_default());
        let instances = instances.iter().map(|row| row.doc(0)).collect::<Result<_, _>>()?;
        Ok((instances, self.loads(cluster, usage)?))
    }

    pub fn task(&mut self, cluster: &str, id: &str) -> Result<Option<Task>, StoreError> {
        self.get(&[cluster.into(), id.into()])
    }

    /// Stores a new task, with what it reserves and the client token it came with, and the
    /// attachments it is found by.
    pub fn insert_task(&mut self, new: &NewTask<'_>) -> Result<(), StoreError> {
        self.reach(task_cluster(new.task))?;
        let reservation = serde_json::to_string(new.reservation)?;
        self.insert_with(
            new.task,
            &[
                ("client_token", new.client_token.into()),
                ("client_request", new.client_request.into()),
                ("reservation", reservation.as_str().into()),
            ],
        )?;
        let task = new.task;
        let cluster = task_cluster(task);
        // Keyed by fresh ids: they fail only when the database does.
        for attachment in &task.attachments {
            self.execute_later(
                "INSERT INTO task_attachments (account, region, cluster, attachment_id, task_id) VALUES ($1, $2, $3, $4, $5)",
                &[cluster.into(), attachment.id.as_str().into(), task.id().into()],
            )?;
        }
        Ok(())
    }

    /// What a stored task reserved on its instance when it was placed.
    pub fn reservation(&mut self, cluster: &str, id: &str) -> Result<Reservation, StoreError> {
        self.reach(cluster)?;
        self.query(
            "SELECT reservation FROM tasks WHERE account = $1 AND region = $2 AND cluster = $3 AND id = $4",
            &[cluster.into(), id.into()],
        )?
        .first()
        .ok_or_else(|| StoreError::Missing(format!("task {id}")))?
        .doc(0)
    }

    /// Appends an event (its envelope as JSON) after every earlier one, with the notice it
    /// carries for the agent channels (an encoded [`crate::domain::events::Notice`]), if any.
    pub fn append_event(
        &mut self,
        cluster: &str,
        detail_type: &str,
        time: f64,
        body: &str,
        notice: Option<&str>,
    ) -> Result<(), StoreError> {
        self.reach(cluster)?;
        metrics::counter!(crate::monitoring::EVENTS_APPENDED, "detail_type" => detail_type.to_owned()).increment(1);
        self.sql.append_event(&super::sql::NewEvent {
            account: &self.scope.account,
            region: &self.scope.region,
            cluster,
            detail_type,
            time,
            body,
            notice,
        })
    }

    /// The tasks of a group (a service's `service:NAME`) not yet STOPPED, and those that
    /// stopped after `stopped_after`.
    pub fn group_tasks(&mut self, cluster: &str, group: &str, stopped_after: f64) -> Result<Vec<Task>, StoreError> {
        self.reach(cluster)?;
        self.query(
            "SELECT doc FROM tasks WHERE account = $1 AND region = $2 AND cluster = $3 AND group_name = $4
               AND (last_status <> 'STOPPED' OR stopped_at > $5)
             ORDER BY id",
            &[cluster.into(), group.into(), stopped_after.into()],
        )?
        .iter()
        .map(|r| r.doc(0))
        .collect()
    }

    /// The task that holds an attachment (an ENI, say), by the attachment's id.
    pub fn task_with_attachment(&mut self, cluster: &str, attachment_id: &str) -> Result<Option<Task>, StoreError> {
        self.reach(cluster)?;
        self.query(
            "SELECT t.doc FROM task_attachments a
             JOIN tasks t ON t.account = a.account AND t.region = a.region AND t.cluster = a.cluster AND t.id = a.task_id
             WHERE a.account = $1 AND a.region = $2 AND a.cluster = $3 AND a.attachment_id = $4",
            &[cluster.into(), attachment_id.into()],
        )?
        .first()
        .map(|r| r.doc(0))
        .transpose()
    }

    /// The tasks a RunTask with this client token created, in the order it created them, each
    /// with the fingerprint of that request (None for tasks stored before fingerprints were kept).
    pub fn tasks_by_client_token(
        &mut self,
        cluster: &str,
        token: &str,
    ) -> Result<Vec<(Task, Option<String>)>, StoreError> {
        self.reach(cluster)?;
        self.query(
            "SELECT doc, client_request FROM tasks
             WHERE account = $1 AND region = $2 AND cluster = $3 AND client_token = $4 ORDER BY {insertion}",
            &[cluster.into(), token.into()],
        )?
        .iter()
        .map(|r| Ok((r.doc(0)?, r.opt_text(1)?.map(str::to_owned))))
        .collect()
    }

    /// Ids of the tasks that pass `filter`, in id order, resuming after `after`.
    pub fn list_tasks(
        &mut self,
        cluster: &str,
        filter: &TaskFilter,
        after: Option<&str>,
        n: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.list_keys::<Task>(
            &[cluster.into()],
            &[
                Filter::Eq("desired_status", filter.desired_status.as_str().into()),
                Filter::EqIf("container_instance", filter.container_instance.as_deref()),
                Filter::EqIf("family", filter.family.as_deref()),
                Filter::EqIf("started_by", filter.started_by.as_deref()),
                Filter::EqIf("launch_type", filter.launch_type.as_deref()),
                Filter::EqIf("group_name", filter.group.as_deref()),
            ],
            after,
            n,
        )
    }

    /// The tasks placed on an instance that are not yet STOPPED, in id order, each with the
    /// desired status its agent last acknowledged receiving (None: never delivered).
    pub fn instance_tasks(
        &mut self,
        cluster: &str,
        instance: &str,
    ) -> Result<Vec<(Task, Option<TaskStatus>)>, StoreError> {
        self.reach(cluster)?;
        self.query(
            "SELECT doc, delivered FROM tasks
             WHERE account = $1 AND region = $2 AND cluster = $3 AND container_instance = $4
               AND last_status <> 'STOPPED'
             ORDER BY id",
            &[cluster.into(), instance.into()],
        )?
        .iter()
        .map(|r| Ok((r.doc(0)?, r.opt_text(1)?.and_then(TaskStatus::parse))))
        .collect()
    }

    /// Takes the next `count` sequence numbers of an instance's ACS messages and returns the
    /// first: they increase across connections, restarts and processes.
    pub fn next_message_seq(&mut self, cluster: &str, id: &str, count: i64) -> Result<i64, StoreError> {
        self.reach(cluster)?;
        let last = self
            .query(
                "UPDATE container_instances SET acs_seq = acs_seq + $5
                 WHERE account = $1 AND region = $2 AND cluster = $3 AND id = $4
                 RETURNING acs_seq",
                &[cluster.into(), id.into(), count.into()],
            )?
            .first()
            .ok_or_else(|| StoreError::Missing(format!("container instance {id}")))?
            .int(0)?;
        Ok(last - count + 1)
    }

    /// Records that a task's agent acknowledged receiving it with `desired` status. Once
    /// STOPPED was acknowledged, a late acknowledgement of RUNNING changes nothing.
    pub fn set_delivered(&mut self, cluster: &str, id: &str, desired: TaskStatus) -> Result<(), StoreError> {
        self.reach(cluster)?;
        self.execute(
            "UPDATE tasks SET delivered = $5
             WHERE account = $1 AND region = $2 AND cluster = $3 AND id = $4
               AND (delivered IS NULL OR delivered <> 'STOPPED')",
            &[cluster.into(), id.into(), desired.as_str().into()],
        )?;
        Ok(())
    }

    /// The process that holds the instance's agent connection, if one does.
    pub fn agent_holder(&mut self, cluster: &str, id: &str) -> Result<Option<String>, StoreError> {
        self.reach(cluster)?;
        let rows = self.query(
            "SELECT agent_process FROM container_instances WHERE account = $1 AND region = $2 AND cluster = $3 AND id = $4",
            &[cluster.into(), id.into()],
        )?;
        match rows.first() {
            Some(row) => Ok(row.opt_text(0)?.map(str::to_owned)),
            None => Ok(None),
        }
    }

    /// Records which process holds the instance's agent connection (None: no process does).
    pub fn set_agent_holder(&mut self, cluster: &str, id: &str, process: Option<&str>) -> Result<(), StoreError> {
        self.reach(cluster)?;
        self.execute(
            "UPDATE container_instances SET agent_process = $5 WHERE account = $1 AND region = $2 AND cluster = $3 AND id = $4",
            &[cluster.into(), id.into(), process.into()],
        )?;
        Ok(())
    }
}

/// The cluster a stored task belongs to, from its ARNs.
fn task_cluster(task: &Task) -> &str {
    crate::domain::arn::cluster_of(&task.task_arn)
        .or_else(|| crate::domain::arn::cluster_of(&task.cluster_arn))
        .unwrap_or_default()
}
