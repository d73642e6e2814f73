//! The shared store: PostgreSQL, for several ecsd processes behind one load balancer.
//!
//! Write transactions run at READ COMMITTED and first take one transaction-scoped advisory
//! lock, so writers from every process run one at a time: no lost update, no overcommitted
//! instance, and event sequence numbers that are committed in order (a reader can never see
//! event N+1 before event N). Reads run as REPEATABLE READ, READ ONLY snapshots and are not
//! serialized. Nothing is needed from the database beyond a plain schema: no extension, no
//! special isolation level. Handlers' closures are synchronous; they run on the blocking pool
//! and drive the async driver there.

use std::collections::HashMap;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio_postgres::types::ToSql;
use tokio_postgres::{IsolationLevel, NoTls, Row};

use super::{
    BoxFuture, ClusterCounts, Erased, EventPage, EventQuery, FamilyStatus, LapsedAgent, NewTask, Store, StoreError,
    StoredEvent, Swept, TaskFilter, Tx, TxFn,
};
use crate::domain::placement::{InstanceLoad, Reservation, Usage};
use crate::domain::records::{Cluster, ContainerInstance, StoredTaskDefinition, Task};
use crate::domain::status::{ContainerInstanceStatus, TaskDefinitionStatus, TaskStatus};
use crate::domain::Scope;

/// Every write transaction of every process takes this advisory lock first.
const WRITE_LOCK: i64 = 0x6563_7364_7772_6974; // "ecsdwrit"
/// Migrations run under this one, by one process at a time.
const MIGRATION_LOCK: i64 = 0x6563_7364_6d69_6772; // "ecsdmigr"
const POOL_SIZE: usize = 16;
/// How often a process looks for events committed by other processes.
const EVENT_POLL: Duration = Duration::from_millis(200);

const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE clusters (
    account TEXT NOT NULL, region TEXT NOT NULL, name TEXT NOT NULL,
    status TEXT NOT NULL, doc TEXT NOT NULL,
    PRIMARY KEY (account, region, name)
);
CREATE TABLE task_definitions (
    account TEXT NOT NULL, region TEXT NOT NULL, family TEXT NOT NULL, revision BIGINT NOT NULL,
    status TEXT NOT NULL, doc TEXT NOT NULL,
    PRIMARY KEY (account, region, family, revision)
);
CREATE TABLE container_instances (
    account TEXT NOT NULL, region TEXT NOT NULL, cluster TEXT NOT NULL, id TEXT NOT NULL,
    status TEXT NOT NULL, doc TEXT NOT NULL,
    PRIMARY KEY (account, region, cluster, id)
);
CREATE TABLE tasks (
    account TEXT NOT NULL, region TEXT NOT NULL, cluster TEXT NOT NULL, id TEXT NOT NULL,
    position BIGSERIAL,
    container_instance TEXT,
    last_status TEXT NOT NULL,
    desired_status TEXT NOT NULL,
    stopped_at DOUBLE PRECISION,
    family TEXT NOT NULL,
    group_name TEXT,
    started_by TEXT,
    launch_type TEXT,
    client_token TEXT,
    reservation TEXT NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (account, region, cluster, id)
);
CREATE INDEX tasks_holding_resources ON tasks (account, region, cluster, container_instance, last_status)
    WHERE last_status <> 'STOPPED';
CREATE INDEX tasks_by_desired_status ON tasks (account, region, cluster, desired_status, id);
CREATE INDEX tasks_stopped ON tasks (stopped_at) WHERE last_status = 'STOPPED';
CREATE INDEX tasks_by_client_token ON tasks (account, region, cluster, client_token) WHERE client_token IS NOT NULL;
CREATE TABLE instance_usage (
    account TEXT NOT NULL, region TEXT NOT NULL, cluster TEXT NOT NULL, instance TEXT NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (account, region, cluster, instance)
);
CREATE TABLE task_attachments (
    account TEXT NOT NULL, region TEXT NOT NULL, cluster TEXT NOT NULL, attachment_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    PRIMARY KEY (account, region, cluster, attachment_id)
);
CREATE TABLE events (
    seq BIGINT PRIMARY KEY,
    account TEXT NOT NULL, region TEXT NOT NULL, cluster TEXT NOT NULL,
    detail_type TEXT NOT NULL, time DOUBLE PRECISION NOT NULL, body TEXT NOT NULL
);
CREATE INDEX events_by_time ON events (time);
CREATE TABLE counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL);
INSERT INTO counters (name, value) VALUES ('event', 0);
CREATE TABLE cursors (name TEXT PRIMARY KEY, seq BIGINT NOT NULL);
"#,
    r#"
-- The desired status the task's agent last acknowledged over ACS (NULL: never delivered).
ALTER TABLE tasks ADD COLUMN delivered TEXT;
-- The last sequence number given to an ACS message for the instance.
ALTER TABLE container_instances ADD COLUMN acs_seq BIGINT NOT NULL DEFAULT 0;
"#,
    r#"
-- Each process's lease on the agent connections it holds: a connection whose process's lease
-- has lapsed is taken for closed, whoever notices first.
CREATE TABLE processes (id TEXT PRIMARY KEY, expires_at DOUBLE PRECISION NOT NULL);
-- The process holding the instance's agent connection (NULL: none).
ALTER TABLE container_instances ADD COLUMN agent_process TEXT;
-- Connections recorded before leases existed belong to no live process.
UPDATE container_instances SET agent_process = '' WHERE (doc::json ->> 'agentConnected') = 'true';
CREATE INDEX container_instances_with_agents ON container_instances (agent_process) WHERE agent_process IS NOT NULL;
-- The fingerprint of the RunTask request that made the task, beside its client token.
ALTER TABLE tasks ADD COLUMN client_request TEXT;
-- What the change means for the agent channels (domain::events::Notice), if anything.
ALTER TABLE events ADD COLUMN notice TEXT;
"#,
];

type TxOutcome = Result<Result<Erased, Erased>, StoreError>;

pub struct PostgresStore {
    pool: Pool,
    commits: watch::Sender<u64>,
    poller: tokio::task::JoinHandle<()>,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user@host:port/db`) and migrates the schema.
    pub async fn open(url: &str) -> Result<PostgresStore, StoreError> {
        let config: tokio_postgres::Config = url.parse()?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .build()
            .map_err(|e| StoreError::Worker(e.to_string()))?;
        migrate(&pool).await?;
        let (commits, _) = watch::channel(0);
        let poller = tokio::spawn(poll_events(pool.clone(), commits.clone()));
        Ok(PostgresStore { pool, commits, poller })
    }

    fn blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Handle, deadpool_postgres::Object) -> Result<R, StoreError> + Send + 'static,
    ) -> BoxFuture<Result<R, StoreError>> {
        let pool = self.pool.clone();
        Box::pin(async move {
            let client = pool.get().await.map_err(|e| StoreError::Worker(e.to_string()))?;
            tokio::task::spawn_blocking(move || f(&Handle::current(), client))
                .await
                .map_err(|e| StoreError::Worker(e.to_string()))?
        })
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

async fn migrate(pool: &Pool) -> Result<(), StoreError> {
    let mut client = pool.get().await.map_err(|e| StoreError::Worker(e.to_string()))?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let result = async {
        client
            .batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
            .await?;
        let applied: i64 = client
            .query_opt("SELECT version FROM schema_version", &[])
            .await?
            .map_or(0, |r| r.get(0));
        let tx = client.transaction().await?;
        for step in MIGRATIONS.iter().skip(applied as usize) {
            tx.batch_execute(step).await?;
        }
        tx.execute("DELETE FROM schema_version", &[]).await?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[&(MIGRATIONS.len() as i64)],
        )
        .await?;
        tx.commit().await?;
        Ok::<_, StoreError>(())
    }
    .await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await?;
    result
}

/// Bumps `commits` when another process (or this one) commits events, so streams wake up.
async fn poll_events(pool: Pool, commits: watch::Sender<u64>) {
    let mut last = -1i64;
    loop {
        if let Ok(client) = pool.get().await {
            if let Ok(row) = client
                .query_one("SELECT value FROM counters WHERE name = 'event'", &[])
                .await
            {
                let seq: i64 = row.get(0);
                if seq != last {
                    last = seq;
                    commits.send_modify(|n| *n += 1);
                }
            }
        }
        tokio::time::sleep(EVENT_POLL).await;
    }
}

impl Store for PostgresStore {
    fn transact(&self, scope: Scope, write: bool, f: TxFn) -> BoxFuture<TxOutcome> {
        let commits = self.commits.clone();
        self.blocking(move |rt, mut client| {
            let tx = if write {
                let tx = rt.block_on(
                    client
                        .build_transaction()
                        .isolation_level(IsolationLevel::ReadCommitted)
                        .start(),
                )?;
                rt.block_on(tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK]))?;
                tx
            } else {
                rt.block_on(
                    client
                        .build_transaction()
                        .isolation_level(IsolationLevel::RepeatableRead)
                        .read_only(true)
                        .start(),
                )?
            };
            let result = {
                let mut view = PgTx { tx: &tx, rt, scope };
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || f(&mut view)))
                    .map_err(|_| StoreError::Worker("a transaction panicked".into()))?
            };
            match result {
                Ok(value) => {
                    rt.block_on(tx.commit())?;
                    if write {
                        commits.send_modify(|n| *n += 1);
                    }
                    Ok(Ok(value))
                }
                Err(abort) => {
                    rt.block_on(tx.rollback())?;
                    Ok(Err(abort))
                }
            }
        })
    }

    fn events(&self, query: EventQuery) -> BoxFuture<Result<EventPage, StoreError>> {
        self.blocking(move |rt, client| {
            rt.block_on(async {
                // The head first, and the page up to it: every event up to the counter's value
                // is committed (sequence numbers are taken under the write lock), while a head
                // read after the page could cover events committed in between and missing
                // from it.
                let head: i64 = client
                    .query_one("SELECT value FROM counters WHERE name = 'event'", &[])
                    .await?
                    .get(0);
                let rows = client
                    .query(
                        "SELECT seq, body, notice FROM events
                         WHERE seq > $1 AND seq <= $7 AND ($2::text IS NULL OR account = $2)
                           AND ($3::text IS NULL OR region = $3)
                           AND ($4::text IS NULL OR cluster = $4) AND ($5::text IS NULL OR detail_type = $5)
                           AND (NOT $8 OR notice IS NOT NULL)
                         ORDER BY seq LIMIT $6",
                        &[
                            &query.after,
                            &query.account,
                            &query.region,
                            &query.cluster,
                            &query.detail_type,
                            &(query.limit as i64),
                            &head,
                            &query.noticed,
                        ],
                    )
                    .await?;
                let events = rows
                    .iter()
                    .map(|r| StoredEvent {
                        seq: r.get(0),
                        body: r.get(1),
                        notice: r.get(2),
                    })
                    .collect::<Vec<_>>();
                Ok(EventPage { events, last_seq: head })
            })
        })
    }

    fn cursor(&self, name: String) -> BoxFuture<Result<i64, StoreError>> {
        self.blocking(move |rt, client| {
            let row = rt.block_on(client.query_opt("SELECT seq FROM cursors WHERE name = $1", &[&name]))?;
            Ok(row.map_or(0, |r| r.get(0)))
        })
    }

    fn set_cursor(&self, name: String, seq: i64) -> BoxFuture<Result<(), StoreError>> {
        self.blocking(move |rt, client| {
            rt.block_on(client.execute(
                "INSERT INTO cursors (name, seq) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET seq = excluded.seq",
                &[&name, &seq],
            ))?;
            Ok(())
        })
    }

    fn sweep(&self, events_before: f64, stopped_tasks_before: f64) -> BoxFuture<Result<Swept, StoreError>> {
        self.blocking(move |rt, mut client| {
            rt.block_on(async {
                let tx = client.transaction().await?;
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK]).await?;
                let events = tx
                    .execute("DELETE FROM events WHERE time < $1", &[&events_before])
                    .await?;
                tx.execute(
                    "DELETE FROM task_attachments a USING tasks t
                     WHERE t.account = a.account AND t.region = a.region AND t.cluster = a.cluster AND t.id = a.task_id
                       AND t.last_status = 'STOPPED' AND t.stopped_at < $1",
                    &[&stopped_tasks_before],
                )
                .await?;
                let tasks = tx
                    .execute(
                        "DELETE FROM tasks WHERE last_status = 'STOPPED' AND stopped_at < $1",
                        &[&stopped_tasks_before],
                    )
                    .await?;
                tx.commit().await?;
                Ok(Swept { events, tasks })
            })
        })
    }

    fn renew_lease(&self, process: String, ttl: Duration) -> BoxFuture<Result<(), StoreError>> {
        // The database's clock: processes on several hosts need not agree on theirs.
        let ttl = ttl.as_secs_f64();
        self.blocking(move |rt, client| {
            rt.block_on(client.execute(
                "INSERT INTO processes (id, expires_at) VALUES ($1, EXTRACT(EPOCH FROM clock_timestamp())::float8 + $2)
                 ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at",
                &[&process, &ttl],
            ))?;
            Ok(())
        })
    }

    fn end_lease(&self, process: String) -> BoxFuture<Result<(), StoreError>> {
        self.blocking(move |rt, client| {
            rt.block_on(client.execute("DELETE FROM processes WHERE id = $1", &[&process]))?;
            Ok(())
        })
    }

    fn lapsed_agents(&self) -> BoxFuture<Result<Vec<LapsedAgent>, StoreError>> {
        self.blocking(move |rt, client| {
            let rows = rt.block_on(client.query(
                "SELECT account, region, cluster, id, agent_process FROM container_instances c
                 WHERE agent_process IS NOT NULL
                   AND NOT EXISTS (SELECT 1 FROM processes p
                                   WHERE p.id = c.agent_process
                                     AND p.expires_at > EXTRACT(EPOCH FROM clock_timestamp())::float8)",
                &[],
            ))?;
            Ok(rows
                .iter()
                .map(|r| LapsedAgent {
                    scope: Scope::new(r.get::<_, String>(0), r.get::<_, String>(1)),
                    cluster: r.get(2),
                    id: r.get(3),
                    process: r.get(4),
                })
                .collect())
        })
    }

    fn commits(&self) -> watch::Receiver<u64> {
        self.commits.subscribe()
    }
}

struct PgTx<'a> {
    tx: &'a deadpool_postgres::Transaction<'a>,
    rt: &'a Handle,
    scope: Scope,
}

impl PgTx<'_> {
    fn usage(&self, cluster: &str, instance: &str) -> Result<Usage, StoreError> {
        let s = &self.scope;
        Ok(self
            .doc(
                "SELECT doc FROM instance_usage WHERE account = $1 AND region = $2 AND cluster = $3 AND instance = $4",
                &[&s.account, &s.region, &cluster, &instance],
            )?
            .unwrap_or_default())
    }

    fn put_usage(&self, cluster: &str, instance: &str, usage: &Usage) -> Result<(), StoreError> {
        let s = &self.scope;
        self.execute(
            "INSERT INTO instance_usage (account, region, cluster, instance, doc) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (account, region, cluster, instance) DO UPDATE SET doc = excluded.doc",
            &[
                &s.account,
                &s.region,
                &cluster,
                &instance,
                &serde_json::to_string(usage)?,
            ],
        )?;
        Ok(())
    }

    fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, StoreError> {
        self.rt.block_on(async {
            let stmt = self.tx.prepare_cached(sql).await?;
            Ok(self.tx.query(&stmt, params).await?)
        })
    }

    fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, StoreError> {
        self.rt.block_on(async {
            let stmt = self.tx.prepare_cached(sql).await?;
            Ok(self.tx.execute(&stmt, params).await?)
        })
    }

    fn doc<T: serde::de::DeserializeOwned>(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<T>, StoreError> {
        match self.query(sql, params)?.first() {
            Some(row) => Ok(Some(serde_json::from_str(row.get::<_, &str>(0))?)),
            None => Ok(None),
        }
    }

    fn docs<T: serde::de::DeserializeOwned>(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<T>, StoreError> {
        self.query(sql, params)?
            .iter()
            .map(|row| Ok(serde_json::from_str(row.get::<_, &str>(0))?))
            .collect()
    }
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Tx for PgTx<'_> {
    fn scope(&self) -> &Scope {
        &self.scope
    }

    fn cluster(&mut self, name: &str) -> Result<Option<Cluster>, StoreError> {
        let s = &self.scope;
        self.doc(
            "SELECT doc FROM clusters WHERE account = $1 AND region = $2 AND name = $3",
            &[&s.account, &s.region, &name],
        )
    }

    fn put_cluster(&mut self, cluster: &Cluster) -> Result<(), StoreError> {
        let s = &self.scope;
        self.execute(
            "INSERT INTO clusters (account, region, name, status, doc) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (account, region, name) DO UPDATE SET status = excluded.status, doc = excluded.doc",
            &[
                &s.account,
                &s.region,
                &cluster.cluster_name,
                &cluster.status.as_str(),
                &serde_json::to_string(cluster)?,
            ],
        )?;
        Ok(())
    }

    fn list_clusters(&mut self, after: Option<&str>, n: usize) -> Result<Vec<Cluster>, StoreError> {
        let s = &self.scope;
        self.docs(
            "SELECT doc FROM clusters WHERE account = $1 AND region = $2 AND status = 'ACTIVE' AND name > $3
             ORDER BY name LIMIT $4",
            &[&s.account, &s.region, &after.unwrap_or(""), &limit(n)],
        )
    }

    fn cluster_counts(&mut self, cluster: &str) -> Result<ClusterCounts, StoreError> {
        let s = &self.scope;
        let registered: i64 = self.query(
            "SELECT COUNT(*) FROM container_instances
             WHERE account = $1 AND region = $2 AND cluster = $3 AND status IN ('ACTIVE', 'DRAINING')",
            &[&s.account, &s.region, &cluster],
        )?[0]
            .get(0);
        let mut counts = ClusterCounts {
            registered_container_instances: registered,
            ..Default::default()
        };
        for row in self.query(
            "SELECT last_status, COALESCE(launch_type, 'EC2'), COUNT(*) FROM tasks
             WHERE account = $1 AND region = $2 AND cluster = $3 AND last_status <> 'STOPPED'
             GROUP BY last_status, launch_type",
            &[&s.account, &s.region, &cluster],
        )? {
            if let Some(status) = TaskStatus::parse(row.get(0)) {
                counts.add(status, row.get(1), row.get(2));
            }
        }
        Ok(counts)
    }

    fn task_definition(&mut self, family: &str, revision: i64) -> Result<Option<StoredTaskDefinition>, StoreError> {
        let s = &self.scope;
        self.doc(
            "SELECT doc FROM task_definitions WHERE account = $1 AND region = $2 AND family = $3 AND revision = $4",
            &[&s.account, &s.region, &family, &revision],
        )
    }

    fn latest_task_definition(&mut self, family: &str) -> Result<Option<StoredTaskDefinition>, StoreError> {
        let s = &self.scope;
        self.doc(
            "SELECT doc FROM task_definitions WHERE account = $1 AND region = $2 AND family = $3 AND status = 'ACTIVE'
             ORDER BY revision DESC LIMIT 1",
            &[&s.account, &s.region, &family],
        )
    }

    fn last_revision(&mut self, family: &str) -> Result<i64, StoreError> {
        let s = &self.scope;
        Ok(self.query(
            "SELECT COALESCE(MAX(revision), 0) FROM task_definitions WHERE account = $1 AND region = $2 AND family = $3",
            &[&s.account, &s.region, &family],
        )?[0]
            .get(0))
    }

    fn put_task_definition(
        &mut self,
        family: &str,
        revision: i64,
        status: TaskDefinitionStatus,
        td: &StoredTaskDefinition,
    ) -> Result<(), StoreError> {
        let status = status.as_str();
        let s = &self.scope;
        self.execute(
            "INSERT INTO task_definitions (account, region, family, revision, status, doc) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (account, region, family, revision) DO UPDATE SET status = excluded.status, doc = excluded.doc",
            &[&s.account, &s.region, &family, &revision, &status, &serde_json::to_string(td)?],
        )?;
        Ok(())
    }

    fn list_task_definitions(
        &mut self,
        family_prefix: Option<&str>,
        status: TaskDefinitionStatus,
        descending: bool,
        after: Option<(&str, i64)>,
        n: usize,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let status = status.as_str();
        let s = &self.scope;
        let sql = if descending {
            "SELECT family, revision FROM task_definitions
             WHERE account = $1 AND region = $2 AND status = $3 AND starts_with(family, $4)
               AND ($5::text IS NULL OR family < $5 OR (family = $5 AND revision < $6))
             ORDER BY family DESC, revision DESC LIMIT $7"
        } else {
            "SELECT family, revision FROM task_definitions
             WHERE account = $1 AND region = $2 AND status = $3 AND starts_with(family, $4)
               AND ($5::text IS NULL OR family > $5 OR (family = $5 AND revision > $6))
             ORDER BY family, revision LIMIT $7"
        };
        let rows = self.query(
            sql,
            &[
                &s.account,
                &s.region,
                &status,
                &family_prefix.unwrap_or(""),
                &after.map(|a| a.0),
                &after.map_or(0, |a| a.1),
                &limit(n),
            ],
        )?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn list_task_definition_families(
        &mut self,
        family_prefix: Option<&str>,
        status: FamilyStatus,
        after: Option<&str>,
        n: usize,
    ) -> Result<Vec<String>, StoreError> {
        let s = &self.scope;
        let sql = match status {
            FamilyStatus::Active => {
                "SELECT family FROM task_definitions WHERE account = $1 AND region = $2 AND starts_with(family, $3) AND family > $4
                 GROUP BY family HAVING bool_or(status = 'ACTIVE') ORDER BY family LIMIT $5"
            }
            FamilyStatus::Inactive => {
                "SELECT family FROM task_definitions WHERE account = $1 AND region = $2 AND starts_with(family, $3) AND family > $4
                 GROUP BY family HAVING NOT bool_or(status = 'ACTIVE') ORDER BY family LIMIT $5"
            }
            FamilyStatus::All => {
                "SELECT family FROM task_definitions WHERE account = $1 AND region = $2 AND starts_with(family, $3) AND family > $4
                 GROUP BY family ORDER BY family LIMIT $5"
            }
        };
        let rows = self.query(
            sql,
            &[
                &s.account,
                &s.region,
                &family_prefix.unwrap_or(""),
                &after.unwrap_or(""),
                &limit(n),
            ],
        )?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn container_instance(&mut self, cluster: &str, id: &str) -> Result<Option<ContainerInstance>, StoreError> {
        let s = &self.scope;
        self.doc(
            "SELECT doc FROM container_instances WHERE account = $1 AND region = $2 AND cluster = $3 AND id = $4",
            &[&s.account, &s.region, &cluster, &id],
        )
    }

    fn put_container_instance(
        &mut self,
        cluster: &str,
        id: &str,
        instance: &ContainerInstance,
    ) -> Result<(), StoreError> {
        let s = &self.scope;
        self.execute(
            "INSERT INTO container_instances (account, region, cluster, id, status, doc) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (account, region, cluster, id) DO UPDATE SET status = excluded.status, doc = excluded.doc",
            &[&s.account, &s.region, &cluster, &id, &instance.status.as_str(), &serde_json::to_string(instance)?],
        )?;
        Ok(())
    }

    fn list_container_instances(
        &mut self,
        cluster: &str,
        status: Option<ContainerInstanceStatus>,
        after: Option<&str>,
        n: usize,
    ) -> Result<Vec<ContainerInstance>, StoreError> {
        let status = status.map(ContainerInstanceStatus::as_str);
        let s = &self.scope;
        self.docs(
            "SELECT doc FROM container_instances
             WHERE account = $1 AND region = $2 AND cluster = $3 AND ($4::text IS NULL AND status <> 'INACTIVE' OR status = $4) AND id > $5
             ORDER BY id LIMIT $6",
            &[
                &s.account,
                &s.region,
                &cluster,
                &status,
                &after.unwrap_or(""),
                &limit(n),
            ],
        )
    }

    fn instance_load(&mut self, cluster: &str, id: &str) -> Result<InstanceLoad, StoreError> {
        Ok(self.usage(cluster, id)?.load())
    }

    fn cluster_loads(&mut self, cluster: &str) -> Result<HashMap<String, InstanceLoad>, StoreError> {
        let s = &self.scope;
        let mut loads = HashMap::new();
        for row in self.query(
            "SELECT instance, doc FROM instance_usage WHERE account = $1 AND region = $2 AND cluster = $3",
            &[&s.account, &s.region, &cluster],
        )? {
            loads.insert(
                row.get::<_, String>(0),
                serde_json::from_str::<Usage>(row.get(1))?.load(),
            );
        }
        Ok(loads)
    }

    fn task(&mut self, cluster: &str, id: &str) -> Result<Option<Task>, StoreError> {
        let s = &self.scope;
        self.doc(
            "SELECT doc FROM tasks WHERE account = $1 AND region = $2 AND cluster = $3 AND id = $4",
            &[&s.account, &s.region, &cluster, &id],
        )
    }

    fn insert_task(&mut self, new: &NewTask<'_>) -> Result<(), StoreError> {
        let s = &self.scope;
        let task = new.task;
        self.execute(
            "INSERT INTO tasks (account, region, cluster, id, container_instance, last_status, desired_status,
                                family, group_name, started_by, launch_type, client_token, client_request,
                                reservation, doc)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
            &[
                &s.account,
                &s.region,
                &new.cluster,
                &task.id(),
                &new.instance,
                &task.last_status.as_str(),
                &task.desired_status.as_str(),
                &new.family,
                &task.group,
                &task.started_by,
                &task.launch_type,
                &new.client_token,
                &new.client_request,
                &serde_json::to_string(new.reservation)?,
                &serde_json::to_string(task)?,
            ],
        )?;
        for attachment in &task.attachments {
            self.execute(
                "INSERT INTO task_attachments (account, region, cluster, attachment_id, task_id) VALUES ($1, $2, $3, $4, $5)",
                &[&s.account, &s.region, &new.cluster, &attachment.id, &task.id()],
            )?;
        }
        if let Some(instance) = new.instance {
            let mut usage = self.usage(new.cluster, instance)?;
            usage.place(
                new.reservation,
                task.group.as_deref().unwrap_or_default(),
                task.last_status,
            );
            self.put_usage(new.cluster, instance, &usage)?;
        }
        Ok(())
    }

    fn append_event(
        &mut self,
        cluster: &str,
        detail_type: &str,
        time: f64,
        body: &str,
        notice: Option<&str>,
    ) -> Result<(), StoreError> {
        let s = &self.scope;
        // The write lock is held, so sequence numbers are taken and committed in order.
        let seq: i64 = self.query(
            "UPDATE counters SET value = value + 1 WHERE name = 'event' RETURNING value",
            &[],
        )?[0]
            .get(0);
        self.execute(
            "INSERT INTO events (seq, account, region, cluster, detail_type, time, body, notice)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &seq,
                &s.account,
                &s.region,
                &cluster,
                &detail_type,
                &time,
                &body,
                &notice,
            ],
        )?;
        Ok(())
    }

    fn task_with_attachment(&mut self, cluster: &str, attachment_id: &str) -> Result<Option<Task>, StoreError> {
        let s = &self.scope;
        self.doc(
            "SELECT t.doc FROM task_attachments a
             JOIN tasks t ON t.account = a.account AND t.region = a.region AND t.cluster = a.cluster AND t.id = a.task_id
             WHERE a.account = $1 AND a.region = $2 AND a.cluster = $3 AND a.attachment_id = $4",
            &[&s.account, &s.region, &cluster, &attachment_id],
        )
    }

    fn tasks_by_client_token(&mut self, cluster: &str, token: &str) -> Result<Vec<(Task, Option<String>)>, StoreError> {
        let s = &self.scope;
        let rows = self.query(
            "SELECT doc, client_request FROM tasks
             WHERE account = $1 AND region = $2 AND cluster = $3 AND client_token = $4 ORDER BY position",
            &[&s.account, &s.region, &cluster, &token],
        )?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            out.push((serde_json::from_str(row.get::<_, &str>(0))?, row.get(1)));
        }
        Ok(out)
    }

    fn list_tasks(
        &mut self,
        cluster: &str,
        filter: &TaskFilter,
        after: Option<&str>,
        n: usize,
    ) -> Result<Vec<String>, StoreError> {
        let s = &self.scope;
        let rows = self.query(
            "SELECT id FROM tasks
             WHERE account = $1 AND region = $2 AND cluster = $3 AND desired_status = $4
               AND ($5::text IS NULL OR container_instance = $5) AND ($6::text IS NULL OR family = $6)
               AND ($7::text IS NULL OR started_by = $7) AND ($8::text IS NULL OR launch_type = $8)
               AND id > $9
             ORDER BY id LIMIT $10",
            &[
                &s.account,
                &s.region,
                &cluster,
                &filter.desired_status.as_str(),
                &filter.container_instance,
                &filter.family,
                &filter.started_by,
                &filter.launch_type,
                &after.unwrap_or(""),
                &limit(n),
            ],
        )?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn instance_tasks(&mut self, cluster: &str, instance: &str) -> Result<Vec<(Task, Option<TaskStatus>)>, StoreError> {
        let s = &self.scope;
        self.query(
            "SELECT doc, delivered FROM tasks
             WHERE account = $1 AND region = $2 AND cluster = $3 AND container_instance = $4
               AND last_status <> 'STOPPED'
             ORDER BY id",
            &[&s.account, &s.region, &cluster, &instance],
        )?
        .iter()
        .map(|row| {
            let delivered: Option<&str> = row.get(1);
            Ok((
                serde_json::from_str(row.get::<_, &str>(0))?,
                delivered.and_then(TaskStatus::parse),
            ))
        })
        .collect()
    }

    fn next_message_seq(&mut self, cluster: &str, id: &str, count: i64) -> Result<i64, StoreError> {
        let s = &self.scope;
        let rows = self.query(
            "UPDATE container_instances SET acs_seq = acs_seq + $5
             WHERE account = $1 AND region = $2 AND cluster = $3 AND id = $4
             RETURNING acs_seq",
            &[&s.account, &s.region, &cluster, &id, &count],
        )?;
        let last: i64 = rows
            .first()
            .ok_or_else(|| StoreError::Missing(format!("container instance {id}")))?
            .get(0);
        Ok(last - count + 1)
    }

    fn set_delivered(&mut self, cluster: &str, id: &str, desired: TaskStatus) -> Result<(), StoreError> {
        let s = &self.scope;
        self.execute(
            "UPDATE tasks SET delivered = $5
             WHERE account = $1 AND region = $2 AND cluster = $3 AND id = $4
               AND (delivered IS NULL OR delivered <> 'STOPPED')",
            &[&s.account, &s.region, &cluster, &id, &desired.as_str()],
        )?;
        Ok(())
    }

    fn agent_holder(&mut self, cluster: &str, id: &str) -> Result<Option<String>, StoreError> {
        let s = &self.scope;
        let rows = self.query(
            "SELECT agent_process FROM container_instances WHERE account = $1 AND region = $2 AND cluster = $3 AND id = $4",
            &[&s.account, &s.region, &cluster, &id],
        )?;
        Ok(rows.first().and_then(|r| r.get(0)))
    }

    fn set_agent_holder(&mut self, cluster: &str, id: &str, process: Option<&str>) -> Result<(), StoreError> {
        let s = &self.scope;
        self.execute(
            "UPDATE container_instances SET agent_process = $5 WHERE account = $1 AND region = $2 AND cluster = $3 AND id = $4",
            &[&s.account, &s.region, &cluster, &id, &process],
        )?;
        Ok(())
    }

    fn update_task(&mut self, cluster: &str, task: &Task) -> Result<(), StoreError> {
        let s = &self.scope;
        let before = self.query(
            "SELECT last_status, reservation, COALESCE(group_name, ''), container_instance FROM tasks
             WHERE account = $1 AND region = $2 AND cluster = $3 AND id = $4",
            &[&s.account, &s.region, &cluster, &task.id()],
        )?;
        let before = before
            .first()
            .ok_or_else(|| StoreError::Missing(format!("task {}", task.task_arn)))?;
        self.execute(
            "UPDATE tasks SET last_status = $5, desired_status = $6, doc = $7, stopped_at = $8
             WHERE account = $1 AND region = $2 AND cluster = $3 AND id = $4",
            &[
                &s.account,
                &s.region,
                &cluster,
                &task.id(),
                &task.last_status.as_str(),
                &task.desired_status.as_str(),
                &serde_json::to_string(task)?,
                &task.stopped_at,
            ],
        )?;
        let from = TaskStatus::parse(before.get(0)).unwrap_or(task.last_status);
        let instance: Option<String> = before.get(3);
        if let Some(instance) = instance.filter(|_| from != task.last_status) {
            let reservation: Reservation = serde_json::from_str(before.get(1))?;
            let mut usage = self.usage(cluster, &instance)?;
            usage.transition(&reservation, before.get(2), from, task.last_status);
            self.put_usage(cluster, &instance, &usage)?;
        }
        Ok(())
    }
}
