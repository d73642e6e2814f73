//! Stored kinds declare themselves here, once: the table, the key and the columns a record is
//! found by, each derived from the record itself, so no caller can store a record under a key
//! or an index value that disagrees with its document. [`Tx::get`], [`Tx::put`] and
//! [`Tx::list`] read, write and page any kind; a new kind needs its declaration here and its
//! table in `schema`, and nothing in the backends.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::sql::Param;
use super::{ReadAhead, StoreError, Tx};
use crate::domain::arn::cluster_of;
use crate::domain::records::{
    AccountSetting, CapacityProviderRecord, Cluster, ConsoleSession, ContainerInstance, NetworkAddress, Service,
    StoredTaskDefinition, Task, TaskProtection,
};

/// Where a kind is stored. Every table is keyed by account and region first, then by `key`.
pub struct Table {
    pub name: &'static str,
    /// The key columns after account and region; lists are ordered by the last of them.
    pub key: &'static [&'static str],
    /// The columns derived from the record, rewritten with every put.
    pub columns: &'static [&'static str],
}

impl Table {
    /// Whether a record of this kind belongs to one cluster, named by its first key column (a
    /// cluster's own record is keyed by its name).
    fn by_cluster(&self) -> bool {
        self.name == "clusters" || self.key.first() == Some(&"cluster")
    }
}

/// A kind of stored record: a JSON document in the `doc` column, with its key and columns.
pub trait Record: Serialize + DeserializeOwned {
    const TABLE: Table;
    /// The values of `TABLE.key`, in order.
    fn key(&self) -> Vec<Param<'_>>;
    /// The values of `TABLE.columns`, in order.
    fn columns(&self) -> Vec<Param<'_>>;
}

/// A condition on a column of a listed kind.
#[derive(Clone, Copy, Debug)]
pub enum Filter<'a> {
    Eq(&'static str, Param<'a>),
    Ne(&'static str, Param<'a>),
    /// Equal when the value is given; no condition otherwise.
    EqIf(&'static str, Option<&'a str>),
}

/// The last path segment of an ARN (an id).
fn last_segment(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or_default()
}

impl Record for Cluster {
    const TABLE: Table = Table {
        name: "clusters",
        key: &["name"],
        columns: &["status"],
    };
    fn key(&self) -> Vec<Param<'_>> {
        vec![Param::Text(&self.cluster_name)]
    }
    fn columns(&self) -> Vec<Param<'_>> {
        vec![Param::Text(self.status.as_str())]
    }
}

impl Record for StoredTaskDefinition {
    const TABLE: Table = Table {
        name: "task_definitions",
        key: &["family", "revision"],
        columns: &["status"],
    };
    fn key(&self) -> Vec<Param<'_>> {
        let family = self.definition.get("family").and_then(|v| v.as_str());
        let revision = self.definition.get("revision").and_then(|v| v.as_i64());
        vec![family.into(), revision.into()]
    }
    fn columns(&self) -> Vec<Param<'_>> {
        vec![Param::Text(self.status().as_str())]
    }
}

impl Record for ContainerInstance {
    const TABLE: Table = Table {
        name: "container_instances",
        key: &["cluster", "id"],
        columns: &["status"],
    };
    fn key(&self) -> Vec<Param<'_>> {
        let arn = &self.container_instance_arn;
        vec![cluster_of(arn).into(), Param::Text(last_segment(arn))]
    }
    fn columns(&self) -> Vec<Param<'_>> {
        vec![Param::Text(self.status.as_str())]
    }
}

impl Record for Service {
    const TABLE: Table = Table {
        name: "services",
        key: &["cluster", "name"],
        columns: &["status", "launch_type"],
    };
    fn key(&self) -> Vec<Param<'_>> {
        vec![cluster_of(&self.service_arn).into(), Param::Text(&self.service_name)]
    }
    fn columns(&self) -> Vec<Param<'_>> {
        vec![Param::Text(self.status.as_str()), Param::Text(self.runs_as())]
    }
}

impl Record for Task {
    const TABLE: Table = Table {
        name: "tasks",
        key: &["cluster", "id"],
        columns: &[
            "container_instance",
            "last_status",
            "desired_status",
            "stopped_at",
            "family",
            "group_name",
            "started_by",
            "launch_type",
        ],
    };
    fn key(&self) -> Vec<Param<'_>> {
        let cluster = cluster_of(&self.task_arn).or_else(|| cluster_of(&self.cluster_arn));
        vec![cluster.into(), Param::Text(self.id())]
    }
    fn columns(&self) -> Vec<Param<'_>> {
        let definition = last_segment(&self.task_definition_arn);
        let family = definition.rsplit_once(':').map_or(definition, |(family, _)| family);
        vec![
            self.container_instance_arn.as_deref().map(last_segment).into(),
            Param::Text(self.last_status.as_str()),
            Param::Text(self.desired_status.as_str()),
            self.stopped_at.into(),
            Param::Text(family),
            self.group.as_deref().into(),
            self.started_by.as_deref().into(),
            self.launch_type.as_deref().into(),
        ]
    }
}

impl Record for AccountSetting {
    const TABLE: Table = Table {
        name: "account_settings",
        key: &["principal", "name"],
        columns: &[],
    };
    fn key(&self) -> Vec<Param<'_>> {
        vec![Param::Text(&self.principal_arn), Param::Text(&self.name)]
    }
    fn columns(&self) -> Vec<Param<'_>> {
        Vec::new()
    }
}

impl Record for ConsoleSession {
    const TABLE: Table = Table {
        name: "console_sessions",
        key: &["id"],
        columns: &["expires_at"],
    };
    fn key(&self) -> Vec<Param<'_>> {
        vec![Param::Text(&self.id)]
    }
    fn columns(&self) -> Vec<Param<'_>> {
        vec![Param::Real(self.expires_at)]
    }
}

impl Record for TaskProtection {
    const TABLE: Table = Table {
        name: "task_protections",
        key: &["cluster", "id"],
        columns: &["expires_at"],
    };
    fn key(&self) -> Vec<Param<'_>> {
        vec![
            cluster_of(&self.task_arn).into(),
            Param::Text(last_segment(&self.task_arn)),
        ]
    }
    fn columns(&self) -> Vec<Param<'_>> {
        vec![Param::Real(self.expiration_date)]
    }
}

impl Record for CapacityProviderRecord {
    const TABLE: Table = Table {
        name: "capacity_providers",
        key: &["name"],
        columns: &["status"],
    };
    fn key(&self) -> Vec<Param<'_>> {
        vec![Param::Text(&self.name)]
    }
    fn columns(&self) -> Vec<Param<'_>> {
        vec![Param::Text(&self.status)]
    }
}

impl Record for NetworkAddress {
    const TABLE: Table = Table {
        name: "network_addresses",
        key: &["subnet", "address"],
        columns: &["task"],
    };
    fn key(&self) -> Vec<Param<'_>> {
        vec![Param::Text(&self.subnet), Param::Text(&self.address)]
    }
    fn columns(&self) -> Vec<Param<'_>> {
        vec![Param::Text(&self.task_arn)]
    }
}

/// `$from, $from+1, ...` for `n` parameters.
fn placeholders(from: usize, n: usize) -> impl Iterator<Item = String> {
    (from..from + n).map(|i| format!("${i}"))
}

/// `a = $3 AND b = $4` for the key columns, numbered from `from`.
fn key_condition(columns: &[&str], from: usize) -> String {
    columns
        .iter()
        .zip(placeholders(from, columns.len()))
        .map(|(c, p)| format!(" AND {c} = {p}"))
        .collect()
}

/// A statement of `table` that `build` makes the first time `kind` and `variant` ask for it,
/// and kept: a kind has a few (an update per set of changed columns), and building one costs
/// more than finding it.
fn built(table: &'static str, kind: &'static str, variant: u64, build: impl FnOnce() -> String) -> Arc<str> {
    type Built = HashMap<(&'static str, &'static str, u64), Arc<str>>;
    static BUILT: OnceLock<RwLock<Built>> = OnceLock::new();
    let cache = BUILT.get_or_init(Default::default);
    let key = (table, kind, variant);
    if let Some(found) = cache.read().ok().and_then(|b| b.get(&key).cloned()) {
        return found;
    }
    let statement: Arc<str> = build().into();
    if let Ok(mut b) = cache.write() {
        b.entry(key).or_insert_with(|| statement.clone());
    }
    statement
}

/// The statement that reads a record of `table` by its key.
fn get_statement(table: &Table) -> Arc<str> {
    built(table.name, "get", 0, || {
        format!(
            "SELECT doc FROM {} WHERE account = $1 AND region = $2{}",
            table.name,
            key_condition(table.key, 3)
        )
    })
}

/// The UPDATE of a record by its key, its parameters but the last (the document, given back
/// beside them). Only the columns whose values differ from `previous`'s are set, when it is
/// given: a column left alone costs its indexes nothing.
fn update_statement<'r, R: Record>(
    scope: &'r crate::domain::Scope,
    previous: Option<&'r R>,
    record: &'r R,
) -> Result<(Arc<str>, Vec<Param<'r>>, String), StoreError> {
    let table = R::TABLE;
    let doc = serde_json::to_string(record)?;
    let mut params = scoped(scope, &[]);
    params.extend(record.key());
    let before = previous.map(Record::columns);
    // Which columns are set, one bit each.
    let mut set = 0u64;
    for (i, value) in record.columns().into_iter().enumerate() {
        if before.as_ref().is_some_and(|b| b[i] == value) {
            continue;
        }
        set |= 1 << i;
        params.push(value);
    }
    let sql = built(table.name, "update", set, || {
        let mut n = 2 + table.key.len();
        let mut sets = Vec::with_capacity(table.columns.len() + 1);
        for (i, column) in table.columns.iter().enumerate() {
            if set & (1 << i) != 0 {
                n += 1;
                sets.push(format!("{column} = ${n}"));
            }
        }
        sets.push(format!("doc = ${}", n + 1));
        format!(
            "UPDATE {} SET {} WHERE account = $1 AND region = $2{}",
            table.name,
            sets.join(", "),
            key_condition(table.key, 3)
        )
    });
    Ok((sql, params, doc))
}

/// The scope's account and region (`$1` and `$2` of every statement), then `params`.
pub(super) fn scoped<'p>(scope: &'p crate::domain::Scope, params: &[Param<'p>]) -> Vec<Param<'p>> {
    let mut all = Vec::with_capacity(params.len() + 2);
    all.extend([Param::Text(&scope.account), Param::Text(&scope.region)]);
    all.extend_from_slice(params);
    all
}

impl ReadAhead {
    /// The read of the record of kind `R` with this key, of `scope`.
    pub fn record<R: Record>(scope: &crate::domain::Scope, key: &[&str]) -> ReadAhead {
        let mut params = vec![scope.account.clone(), scope.region.clone()];
        params.extend(key.iter().map(|k| (*k).to_owned()));
        ReadAhead {
            statement: get_statement(&R::TABLE).to_string(),
            params,
        }
    }
}

impl Tx<'_> {
    /// Refuses, in a transaction bound to one cluster, a record of another cluster, a list
    /// across clusters, or a change to a record of the scope's own.
    fn reach_record(&self, table: &Table, key: &[Param<'_>], change: bool) -> Result<(), StoreError> {
        match (table.by_cluster(), key.first()) {
            (true, Some(Param::Text(cluster))) => self.reach(cluster),
            (true, _) => self.reach_beyond(&format!("every cluster's {}", table.name)),
            (false, _) if change => self.reach_beyond(&format!("a change to {}", table.name)),
            (false, _) => Ok(()),
        }
    }

    /// The record of kind `R` with this key (the values of `R::TABLE.key`).
    pub fn get<R: Record>(&mut self, key: &[Param<'_>]) -> Result<Option<R>, StoreError> {
        self.get_as::<R, R>(key)
    }

    /// The record of kind `R` with this key, read as `V`: a view of the members a caller
    /// needs, which costs less to read than the whole record.
    pub fn get_as<R: Record, V: DeserializeOwned>(&mut self, key: &[Param<'_>]) -> Result<Option<V>, StoreError> {
        let found = self.get_text::<R>(key)?;
        found.map(|doc| Ok(serde_json::from_str(&doc)?)).transpose()
    }

    /// The stored document of the record of kind `R` with this key, unparsed: for an answer
    /// that shows the record as it is stored.
    pub fn get_text<R: Record>(&mut self, key: &[Param<'_>]) -> Result<Option<String>, StoreError> {
        self.reach_record(&R::TABLE, key, false)?;
        let params = scoped(&self.scope, key);
        let sql = get_statement(&R::TABLE);
        Ok(self.sql.read_records(&[(&sql, &params)])?.pop().flatten())
    }

    /// Says what the record of kind `R` with this key now is (see [`Sql::holds`]).
    fn holds<R: Record>(&mut self, key: &[Param<'_>], doc: Option<&str>) {
        let params = scoped(&self.scope, key);
        self.sql.holds(R::TABLE.name, &get_statement(&R::TABLE), &params, doc);
    }

    /// Two records, of kinds `A` and `B`, by their keys, read together: one round trip to a
    /// database across the network.
    pub fn get_pair<A: Record, B: Record>(
        &mut self,
        a: &[Param<'_>],
        b: &[Param<'_>],
    ) -> Result<(Option<A>, Option<B>), StoreError> {
        self.get_pair_as::<A, A, B, B>(a, b)
    }

    /// [`Tx::get_pair`], each read as a view ([`Tx::get_as`]).
    pub fn get_pair_as<A: Record, VA: DeserializeOwned, B: Record, VB: DeserializeOwned>(
        &mut self,
        a: &[Param<'_>],
        b: &[Param<'_>],
    ) -> Result<(Option<VA>, Option<VB>), StoreError> {
        self.reach_record(&A::TABLE, a, false)?;
        self.reach_record(&B::TABLE, b, false)?;
        let (sql_a, sql_b) = (get_statement(&A::TABLE), get_statement(&B::TABLE));
        let params_a = scoped(&self.scope, a);
        let params_b = scoped(&self.scope, b);
        let mut docs = self
            .sql
            .read_records(&[(&sql_a, &params_a), (&sql_b, &params_b)])?
            .into_iter();
        let mut next = || docs.next().flatten();
        let (a, b) = (next(), next());
        Ok((
            a.map(|doc| serde_json::from_str(&doc)).transpose()?,
            b.map(|doc| serde_json::from_str(&doc)).transpose()?,
        ))
    }

    /// Stores a record, in place of the one with its key if there is one. Columns that are not
    /// the record's own (kept beside it by the store) are left as they are.
    pub fn put<R: Record>(&mut self, record: &R) -> Result<(), StoreError> {
        self.reach_record(&R::TABLE, &record.key(), true)?;
        let (sql, mut params, doc) = update_statement(&self.scope, None, record)?;
        params.push(Param::Text(&doc));
        if self.sql.execute(&sql, &params)? == 0 {
            return self.insert_with(record, &[]);
        }
        self.holds::<R>(&record.key(), Some(&doc));
        Ok(())
    }

    /// Rewrites a record this transaction found stored as `previous`, as [`Tx::put`] would: one
    /// statement whose answer nothing waits for (a database across the network gets it with the
    /// next), setting only the columns that changed.
    pub fn update<R: Record>(&mut self, previous: &R, record: &R) -> Result<(), StoreError> {
        self.reach_record(&R::TABLE, &record.key(), true)?;
        let (sql, mut params, doc) = update_statement(&self.scope, Some(previous), record)?;
        params.push(Param::Text(&doc));
        self.sql.execute_later(&sql, &params)?;
        self.holds::<R>(&record.key(), Some(&doc));
        Ok(())
    }

    /// Removes the record of kind `R` with this key; whether there was one.
    pub fn delete<R: Record>(&mut self, key: &[Param<'_>]) -> Result<bool, StoreError> {
        self.reach_record(&R::TABLE, key, true)?;
        let table = R::TABLE;
        let sql = built(table.name, "delete", 0, || {
            format!(
                "DELETE FROM {} WHERE account = $1 AND region = $2{}",
                table.name,
                key_condition(table.key, 3)
            )
        });
        let params = scoped(&self.scope, key);
        let deleted = self.sql.execute(&sql, &params)? > 0;
        self.holds::<R>(key, None);
        Ok(deleted)
    }

    /// Stores a new record, with columns of the store's own beside the record's: one statement
    /// nothing waits for, as the record is known to be new (its key is fresh, or was just found
    /// missing under the write's hold).
    pub(super) fn insert_with<R: Record>(&mut self, record: &R, extra: &[(&str, Param<'_>)]) -> Result<(), StoreError> {
        self.reach_record(&R::TABLE, &record.key(), true)?;
        let table = R::TABLE;
        let doc = serde_json::to_string(record)?;
        let mut params = scoped(&self.scope, &[]);
        params.extend(record.key());
        params.extend(record.columns());
        params.push(Param::Text(&doc));
        params.extend(extra.iter().map(|(_, p)| *p));
        let extra_columns = {
            use std::hash::{Hash, Hasher};
            let mut hash = std::collections::hash_map::DefaultHasher::new();
            extra.iter().for_each(|(c, _)| c.hash(&mut hash));
            hash.finish()
        };
        let sql = built(table.name, "insert", extra_columns, || {
            let names: Vec<&str> = ["account", "region"]
                .into_iter()
                .chain(table.key.iter().copied())
                .chain(table.columns.iter().copied())
                .chain(["doc"])
                .chain(extra.iter().map(|(c, _)| *c))
                .collect();
            format!(
                "INSERT INTO {} ({}) VALUES ({})",
                table.name,
                names.join(", "),
                placeholders(1, names.len()).collect::<Vec<_>>().join(", "),
            )
        });
        self.sql.execute_later(&sql, &params)?;
        self.holds::<R>(&record.key(), Some(&doc));
        Ok(())
    }

    /// Records of kind `R` whose leading key columns equal `prefix` and that pass every
    /// filter, ordered by the last key column, resuming after `after`.
    pub fn list<R: Record>(
        &mut self,
        prefix: &[Param<'_>],
        filters: &[Filter<'_>],
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<R>, StoreError> {
        self.select::<R>("doc", prefix, filters, after, limit)?
            .iter()
            .map(|row| row.doc(0))
            .collect()
    }

    /// The last key column of what [`Tx::list`] would return.
    pub fn list_keys<R: Record>(
        &mut self,
        prefix: &[Param<'_>],
        filters: &[Filter<'_>],
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let order = R::TABLE.key.last().copied().unwrap_or("doc");
        self.select::<R>(order, prefix, filters, after, limit)?
            .iter()
            .map(|row| Ok(row.text(0)?.to_owned()))
            .collect()
    }

    fn select<R: Record>(
        &mut self,
        what: &str,
        prefix: &[Param<'_>],
        filters: &[Filter<'_>],
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<super::sql::Row>, StoreError> {
        self.reach_record(&R::TABLE, prefix, false)?;
        let (sql, params) = select_statement::<R>(&self.scope, what, prefix, filters, after, limit);
        self.sql.query(&sql, &params)
    }
}

/// The statement of [`Tx::list`] (selecting `what`) in `scope`, and its parameters, to run with
/// others; the caller checks that its transaction reaches what it lists.
pub(super) fn select_statement<'p, R: Record>(
    scope: &'p crate::domain::Scope,
    what: &str,
    prefix: &[Param<'p>],
    filters: &[Filter<'p>],
    after: Option<&'p str>,
    limit: usize,
) -> (String, Vec<Param<'p>>) {
    let table = R::TABLE;
    let order = table.key.last().copied().unwrap_or("doc");
    let mut params = scoped(scope, prefix);
    let mut sql = format!(
        "SELECT {what} FROM {} WHERE account = $1 AND region = $2{}",
        table.name,
        key_condition(&table.key[..prefix.len()], 3)
    );
    for filter in filters {
        let (column, op, value) = match *filter {
            Filter::Eq(c, v) => (c, "=", v),
            Filter::Ne(c, v) => (c, "<>", v),
            Filter::EqIf(c, Some(v)) => (c, "=", Param::Text(v)),
            Filter::EqIf(_, None) => continue,
        };
        params.push(value);
        sql.push_str(&format!(" AND {column} {op} ${}", params.len()));
    }
    params.push(Param::Text(after.unwrap_or("")));
    params.push(Param::Int(i64::try_from(limit).unwrap_or(i64::MAX)));
    sql.push_str(&format!(
        " AND {order} > ${} ORDER BY {order} LIMIT ${}",
        params.len() - 1,
        params.len()
    ));
    (sql, params)
}
