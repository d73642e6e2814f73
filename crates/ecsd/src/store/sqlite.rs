//! The embedded store: one SQLite database file in WAL mode.
//!
//! All writes go through one writer thread that groups whatever is queued into a single
//! transaction (each request in its own savepoint, so one request's abort does not undo
//! another's) and commits with `synchronous=FULL`: one fsync covers the whole group, and no
//! request is answered before the group is on disk. Reads run on a pool of read-only
//! connections on the blocking thread pool and see the last committed state.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use tokio::sync::{oneshot, watch, Semaphore};

use super::{
    BoxFuture, ClusterCounts, Erased, EventPage, EventQuery, FamilyStatus, LapsedAgent, NewTask, Store, StoreError,
    StoredEvent, Swept, TaskFilter, Tx, TxFn,
};
use crate::domain::placement::{InstanceLoad, Reservation, Usage};
use crate::domain::records::{Cluster, ContainerInstance, StoredTaskDefinition, Task};
use crate::domain::status::{ContainerInstanceStatus, TaskDefinitionStatus, TaskStatus};
use crate::domain::Scope;

/// Requests committed together at most; bounds the latency one group adds to its first request.
const MAX_GROUP: usize = 512;
/// Reads running at once (each on a blocking thread with its own connection); more wait their
/// turn, so a burst of readers costs neither threads nor memory beyond this.
const MAX_READERS: usize = 8;

/// The schema, one step per entry; `PRAGMA user_version` counts the steps applied.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE clusters (
    account TEXT NOT NULL,
    region TEXT NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (account, region, name)
);
CREATE TABLE task_definitions (
    account TEXT NOT NULL,
    region TEXT NOT NULL,
    family TEXT NOT NULL,
    revision INTEGER NOT NULL,
    status TEXT NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (account, region, family, revision)
);
CREATE TABLE container_instances (
    account TEXT NOT NULL,
    region TEXT NOT NULL,
    cluster TEXT NOT NULL,
    id TEXT NOT NULL,
    status TEXT NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (account, region, cluster, id)
);
CREATE TABLE tasks (
    account TEXT NOT NULL,
    region TEXT NOT NULL,
    cluster TEXT NOT NULL,
    id TEXT NOT NULL,
    container_instance TEXT,
    last_status TEXT NOT NULL,
    desired_status TEXT NOT NULL,
    stopped_at REAL,
    family TEXT NOT NULL,
    group_name TEXT,
    started_by TEXT,
    launch_type TEXT,
    client_token TEXT,
    reservation TEXT NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (account, region, cluster, id)
);
CREATE INDEX tasks_holding_resources
    ON tasks (account, region, cluster, container_instance, last_status)
    WHERE last_status <> 'STOPPED';
CREATE TABLE instance_usage (
    account TEXT NOT NULL,
    region TEXT NOT NULL,
    cluster TEXT NOT NULL,
    instance TEXT NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (account, region, cluster, instance)
);
CREATE TABLE task_attachments (
    account TEXT NOT NULL,
    region TEXT NOT NULL,
    cluster TEXT NOT NULL,
    attachment_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    PRIMARY KEY (account, region, cluster, attachment_id)
);
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    account TEXT NOT NULL,
    region TEXT NOT NULL,
    cluster TEXT NOT NULL,
    detail_type TEXT NOT NULL,
    time REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX events_by_time ON events (time);
CREATE TABLE cursors (
    name TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
);
CREATE INDEX tasks_by_desired_status ON tasks (account, region, cluster, desired_status, id);
CREATE INDEX tasks_stopped ON tasks (stopped_at) WHERE last_status = 'STOPPED';
CREATE INDEX tasks_by_client_token ON tasks (account, region, cluster, client_token) WHERE client_token IS NOT NULL;
"#,
    r#"
-- The desired status the task's agent last acknowledged over ACS (NULL: never delivered).
ALTER TABLE tasks ADD COLUMN delivered TEXT;
-- The last sequence number given to an ACS message for the instance.
ALTER TABLE container_instances ADD COLUMN acs_seq INTEGER NOT NULL DEFAULT 0;
"#,
    r#"
-- Each process's lease on the agent connections it holds: a connection whose process's lease
-- has lapsed is taken for closed, whoever notices first.
CREATE TABLE processes (id TEXT PRIMARY KEY, expires_at REAL NOT NULL);
-- The process holding the instance's agent connection (NULL: none).
ALTER TABLE container_instances ADD COLUMN agent_process TEXT;
-- Connections recorded before leases existed belong to no live process.
UPDATE container_instances SET agent_process = '' WHERE json_extract(doc, '$.agentConnected') = 1;
CREATE INDEX container_instances_with_agents ON container_instances (agent_process) WHERE agent_process IS NOT NULL;
-- The fingerprint of the RunTask request that made the task, beside its client token.
ALTER TABLE tasks ADD COLUMN client_request TEXT;
-- What the change means for the agent channels (domain::events::Notice), if anything.
ALTER TABLE events ADD COLUMN notice TEXT;
"#,
];

type TxOutcome = Result<Result<Erased, Erased>, StoreError>;
type Reply = oneshot::Sender<TxOutcome>;

/// A closure over the raw connection, for work that belongs to no scope (maintenance, cursors).
type RawFn = Box<dyn FnOnce(&Connection) -> Result<Erased, StoreError> + Send>;

enum Work {
    Scoped(Scope, TxFn),
    Raw(RawFn),
}

struct Job {
    work: Work,
    reply: Reply,
}

pub struct SqliteStore {
    path: PathBuf,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    readers: Arc<Mutex<Vec<Connection>>>,
    reading: Arc<Semaphore>,
    commits: watch::Receiver<u64>,
}

impl SqliteStore {
    /// Opens (creating and migrating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&mut conn)?;
        let (tx, rx) = mpsc::channel();
        let (commits_tx, commits) = watch::channel(0);
        let writer = std::thread::Builder::new()
            .name("ecsd-sqlite-writer".into())
            .spawn(move || write_loop(conn, rx, commits_tx))
            .map_err(|e| StoreError::Worker(e.to_string()))?;
        Ok(SqliteStore {
            path: path.to_owned(),
            jobs: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            readers: Arc::new(Mutex::new(Vec::new())),
            reading: Arc::new(Semaphore::new(MAX_READERS)),
            commits,
        })
    }

    /// Commits what is queued and stops the writer. Later transactions fail with `Closed`.
    pub fn shutdown(&self) {
        drop(self.jobs.lock().map(|mut j| j.take()));
        if let Some(handle) = self.writer.lock().ok().and_then(|mut w| w.take()) {
            let _ = handle.join();
        }
    }

    fn read_connection(path: &Path, pool: &Mutex<Vec<Connection>>) -> Result<Connection, StoreError> {
        if let Some(conn) = pool.lock().ok().and_then(|mut p| p.pop()) {
            return Ok(conn);
        }
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(conn)
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Store for SqliteStore {
    fn transact(&self, scope: Scope, write: bool, f: TxFn) -> BoxFuture<Result<Result<Erased, Erased>, StoreError>> {
        if write {
            let (reply, answer) = oneshot::channel();
            return self.submit(Work::Scoped(scope, f), reply, answer);
        }
        self.read_raw(move |conn| {
            let mut view = SqliteTx { conn, scope };
            catch_unwind(AssertUnwindSafe(move || f(&mut view)))
                .map_err(|_| StoreError::Worker("a read panicked".into()))
        })
    }

    fn events(&self, query: EventQuery) -> BoxFuture<Result<EventPage, StoreError>> {
        self.read_raw(move |conn| {
            // The head first, and the page up to it: each statement reads its own snapshot, so
            // a head read after the page could cover events committed in between and missing
            // from it.
            let head = conn
                .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM events")?
                .query_row([], |r| r.get::<_, i64>(0))?;
            let mut stmt = conn.prepare_cached(
                "SELECT seq, body, notice FROM events
                 WHERE seq > ?1 AND seq <= ?7 AND (?2 IS NULL OR account = ?2) AND (?3 IS NULL OR region = ?3)
                   AND (?4 IS NULL OR cluster = ?4) AND (?5 IS NULL OR detail_type = ?5)
                   AND (?8 = 0 OR notice IS NOT NULL)
                 ORDER BY seq LIMIT ?6",
            )?;
            let rows = stmt.query_map(
                params![
                    query.after,
                    query.account,
                    query.region,
                    query.cluster,
                    query.detail_type,
                    query.limit as i64,
                    head,
                    query.noticed
                ],
                |r| {
                    Ok(StoredEvent {
                        seq: r.get(0)?,
                        body: r.get(1)?,
                        notice: r.get(2)?,
                    })
                },
            )?;
            let events = rows.collect::<Result<Vec<_>, _>>()?;
            Ok(EventPage { events, last_seq: head })
        })
    }

    fn cursor(&self, name: String) -> BoxFuture<Result<i64, StoreError>> {
        self.read_raw(move |conn| {
            Ok(conn
                .prepare_cached("SELECT seq FROM cursors WHERE name = ?1")?
                .query_row([&name], |r| r.get(0))
                .optional()?
                .unwrap_or(0))
        })
    }

    fn set_cursor(&self, name: String, seq: i64) -> BoxFuture<Result<(), StoreError>> {
        self.write_raw(move |conn| {
            conn.prepare_cached(
                "INSERT INTO cursors (name, seq) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET seq = excluded.seq",
            )?
            .execute(params![name, seq])?;
            Ok(())
        })
    }

    fn sweep(&self, events_before: f64, stopped_tasks_before: f64) -> BoxFuture<Result<Swept, StoreError>> {
        self.write_raw(move |conn| {
            let events = conn
                .prepare_cached("DELETE FROM events WHERE time < ?1")?
                .execute([events_before])?;
            conn.prepare_cached(
                "DELETE FROM task_attachments WHERE (account, region, cluster, task_id) IN
                   (SELECT account, region, cluster, id FROM tasks WHERE last_status = 'STOPPED' AND stopped_at < ?1)",
            )?
            .execute([stopped_tasks_before])?;
            let tasks = conn
                .prepare_cached("DELETE FROM tasks WHERE last_status = 'STOPPED' AND stopped_at < ?1")?
                .execute([stopped_tasks_before])?;
            Ok(Swept {
                events: events as u64,
                tasks: tasks as u64,
            })
        })
    }

    fn renew_lease(&self, process: String, ttl: Duration) -> BoxFuture<Result<(), StoreError>> {
        // One process owns an SQLite file, so its own clock is the store's.
        let expires_at = crate::domain::now() + ttl.as_secs_f64();
        self.write_raw(move |conn| {
            conn.prepare_cached(
                "INSERT INTO processes (id, expires_at) VALUES (?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at",
            )?
            .execute(params![process, expires_at])?;
            Ok(())
        })
    }

    fn end_lease(&self, process: String) -> BoxFuture<Result<(), StoreError>> {
        self.write_raw(move |conn| {
            conn.prepare_cached("DELETE FROM processes WHERE id = ?1")?
                .execute([process])?;
            Ok(())
        })
    }

    fn lapsed_agents(&self) -> BoxFuture<Result<Vec<LapsedAgent>, StoreError>> {
        let now = crate::domain::now();
        self.read_raw(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT account, region, cluster, id, agent_process FROM container_instances c
                 WHERE agent_process IS NOT NULL
                   AND NOT EXISTS (SELECT 1 FROM processes p WHERE p.id = c.agent_process AND p.expires_at > ?1)",
            )?;
            let rows = stmt.query_map([now], |r| {
                Ok(LapsedAgent {
                    scope: Scope::new(r.get::<_, String>(0)?, r.get::<_, String>(1)?),
                    cluster: r.get(2)?,
                    id: r.get(3)?,
                    process: r.get(4)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn commits(&self) -> watch::Receiver<u64> {
        self.commits.clone()
    }

    fn close(&self) {
        self.shutdown();
    }
}

impl SqliteStore {
    fn submit(&self, work: Work, reply: Reply, answer: oneshot::Receiver<TxOutcome>) -> BoxFuture<TxOutcome> {
        let sent = self
            .jobs
            .lock()
            .ok()
            .and_then(|jobs| jobs.as_ref().map(|j| j.send(Job { work, reply })));
        Box::pin(async move {
            match sent {
                Some(Ok(())) => answer.await.unwrap_or(Err(StoreError::Closed)),
                _ => Err(StoreError::Closed),
            }
        })
    }

    /// Runs `f` on the writer, in the next commit group.
    fn write_raw<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> BoxFuture<Result<R, StoreError>> {
        let (reply, answer) = oneshot::channel();
        let work = Work::Raw(Box::new(move |conn| f(conn).map(|r| Box::new(r) as Erased)));
        let done = self.submit(work, reply, answer);
        Box::pin(async move {
            match done.await? {
                Ok(value) => value
                    .downcast::<R>()
                    .map(|v| *v)
                    .map_err(|_| StoreError::Worker("unexpected result type".into())),
                Err(e) => Err(e
                    .downcast::<StoreError>()
                    .map(|e| *e)
                    .unwrap_or_else(|_| StoreError::Worker("unexpected error type".into()))),
            }
        })
    }

    /// Runs `f` in a read transaction on a pooled read-only connection.
    fn read_raw<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> BoxFuture<Result<R, StoreError>> {
        let path = self.path.clone();
        let pool = self.readers.clone();
        let reading = self.reading.clone();
        Box::pin(async move {
            let _turn = reading.acquire_owned().await.map_err(|_| StoreError::Closed)?;
            tokio::task::spawn_blocking(move || {
                let conn = Self::read_connection(&path, &pool)?;
                let outcome = (|| {
                    let tx = conn.unchecked_transaction()?;
                    let result = f(&tx)?;
                    tx.finish()?;
                    Ok(result)
                })();
                if let Ok(mut idle) = pool.lock() {
                    idle.push(conn);
                }
                outcome
            })
            .await
            .map_err(|e| StoreError::Worker(e.to_string()))?
        })
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let applied: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if applied >= MIGRATIONS.len() {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
    for step in &MIGRATIONS[applied..] {
        tx.execute_batch(step)?;
    }
    tx.pragma_update(None, "user_version", MIGRATIONS.len())?;
    tx.commit()?;
    tracing::info!(from = applied, to = MIGRATIONS.len(), "migrated the store schema");
    Ok(())
}

fn write_loop(mut conn: Connection, jobs: mpsc::Receiver<Job>, commits: watch::Sender<u64>) {
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        commit_group(&mut conn, group, &commits);
    }
}

fn commit_group(conn: &mut Connection, group: Vec<Job>, commits: &watch::Sender<u64>) {
    let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            let message = e.to_string();
            for job in group {
                let _ = job.reply.send(Err(StoreError::Worker(message.clone())));
            }
            return;
        }
    };
    let mut answers = Vec::with_capacity(group.len());
    for Job { work, reply } in group {
        let outcome = (|| {
            let savepoint = tx.savepoint()?;
            let result = match work {
                Work::Scoped(scope, f) => {
                    let mut view = SqliteTx {
                        conn: &savepoint,
                        scope,
                    };
                    catch_unwind(AssertUnwindSafe(move || f(&mut view)))
                }
                Work::Raw(f) => catch_unwind(AssertUnwindSafe(|| f(&savepoint).map_err(|e| Box::new(e) as Erased))),
            };
            match result {
                Ok(Ok(value)) => {
                    savepoint.commit()?;
                    Ok(Ok(value))
                }
                // Dropping the savepoint rolls it back.
                Ok(Err(abort)) => Ok(Err(abort)),
                Err(_) => Err(StoreError::Worker("a write panicked".into())),
            }
        })();
        answers.push((reply, outcome));
    }
    match tx.commit() {
        Ok(()) => {
            commits.send_modify(|n| *n += 1);
            for (reply, outcome) in answers {
                let _ = reply.send(outcome);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "commit failed");
            let message = e.to_string();
            for (reply, _) in answers {
                let _ = reply.send(Err(StoreError::Worker(format!("commit failed: {message}"))));
            }
        }
    }
}

/// A transaction (or savepoint) on one connection, bound to a scope.
struct SqliteTx<'c> {
    conn: &'c Connection,
    scope: Scope,
}

impl SqliteTx<'_> {
    fn usage(&self, cluster: &str, instance: &str) -> Result<Usage, StoreError> {
        let s = &self.scope;
        Ok(self
            .doc(
                "SELECT doc FROM instance_usage WHERE account = ?1 AND region = ?2 AND cluster = ?3 AND instance = ?4",
                params![s.account, s.region, cluster, instance],
            )?
            .unwrap_or_default())
    }

    fn put_usage(&self, cluster: &str, instance: &str, usage: &Usage) -> Result<(), StoreError> {
        let s = &self.scope;
        self.conn
            .prepare_cached(
                "INSERT INTO instance_usage (account, region, cluster, instance, doc) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (account, region, cluster, instance) DO UPDATE SET doc = excluded.doc",
            )?
            .execute(params![
                s.account,
                s.region,
                cluster,
                instance,
                serde_json::to_string(usage)?
            ])?;
        Ok(())
    }

    fn doc<T: serde::de::DeserializeOwned>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Option<T>, StoreError> {
        let text: Option<String> = self
            .conn
            .prepare_cached(sql)?
            .query_row(params, |r| r.get(0))
            .optional()?;
        Ok(text.map(|t| serde_json::from_str(&t)).transpose()?)
    }

    fn docs<T: serde::de::DeserializeOwned>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<T>, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt.query_map(params, |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(serde_json::from_str(&row?)?);
        }
        Ok(out)
    }
}

impl Tx for SqliteTx<'_> {
    fn scope(&self) -> &Scope {
        &self.scope
    }

    fn cluster(&mut self, name: &str) -> Result<Option<Cluster>, StoreError> {
        let s = &self.scope;
        self.doc(
            "SELECT doc FROM clusters WHERE account = ?1 AND region = ?2 AND name = ?3",
            params![s.account, s.region, name],
        )
    }

    fn put_cluster(&mut self, cluster: &Cluster) -> Result<(), StoreError> {
        let s = &self.scope;
        self.conn
            .prepare_cached(
                "INSERT INTO clusters (account, region, name, status, doc) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (account, region, name) DO UPDATE SET status = excluded.status, doc = excluded.doc",
            )?
            .execute(params![
                s.account,
                s.region,
                cluster.cluster_name,
                cluster.status.as_str(),
                serde_json::to_string(cluster)?
            ])?;
        Ok(())
    }

    fn list_clusters(&mut self, after: Option<&str>, limit: usize) -> Result<Vec<Cluster>, StoreError> {
        let s = &self.scope;
        self.docs(
            "SELECT doc FROM clusters WHERE account = ?1 AND region = ?2 AND status = 'ACTIVE' AND name > ?3
             ORDER BY name LIMIT ?4",
            params![s.account, s.region, after.unwrap_or(""), limit as i64],
        )
    }

    fn cluster_counts(&mut self, cluster: &str) -> Result<ClusterCounts, StoreError> {
        let s = &self.scope;
        let registered = self
            .conn
            .prepare_cached(
                "SELECT COUNT(*) FROM container_instances
                 WHERE account = ?1 AND region = ?2 AND cluster = ?3 AND status IN ('ACTIVE', 'DRAINING')",
            )?
            .query_row(params![s.account, s.region, cluster], |r| r.get(0))?;
        let mut counts = ClusterCounts {
            registered_container_instances: registered,
            ..Default::default()
        };
        let mut stmt = self.conn.prepare_cached(
            "SELECT last_status, COALESCE(launch_type, 'EC2'), COUNT(*) FROM tasks
             WHERE account = ?1 AND region = ?2 AND cluster = ?3 AND last_status <> 'STOPPED'
             GROUP BY last_status, launch_type",
        )?;
        let rows = stmt.query_map(params![s.account, s.region, cluster], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?))
        })?;
        for row in rows {
            let (status, launch_type, n) = row?;
            let Some(status) = TaskStatus::parse(&status) else {
                continue;
            };
            counts.add(status, &launch_type, n);
        }
        Ok(counts)
    }

    fn task_definition(&mut self, family: &str, revision: i64) -> Result<Option<StoredTaskDefinition>, StoreError> {
        let s = &self.scope;
        self.doc(
            "SELECT doc FROM task_definitions WHERE account = ?1 AND region = ?2 AND family = ?3 AND revision = ?4",
            params![s.account, s.region, family, revision],
        )
    }

    fn latest_task_definition(&mut self, family: &str) -> Result<Option<StoredTaskDefinition>, StoreError> {
        let s = &self.scope;
        self.doc(
            "SELECT doc FROM task_definitions WHERE account = ?1 AND region = ?2 AND family = ?3 AND status = 'ACTIVE'
             ORDER BY revision DESC LIMIT 1",
            params![s.account, s.region, family],
        )
    }

    fn last_revision(&mut self, family: &str) -> Result<i64, StoreError> {
        let s = &self.scope;
        Ok(self
            .conn
            .prepare_cached(
                "SELECT COALESCE(MAX(revision), 0) FROM task_definitions WHERE account = ?1 AND region = ?2 AND family = ?3",
            )?
            .query_row(params![s.account, s.region, family], |r| r.get(0))?)
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
        self.conn
            .prepare_cached(
                "INSERT INTO task_definitions (account, region, family, revision, status, doc) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (account, region, family, revision) DO UPDATE SET status = excluded.status, doc = excluded.doc",
            )?
            .execute(params![s.account, s.region, family, revision, status, serde_json::to_string(td)?])?;
        Ok(())
    }

    fn list_task_definitions(
        &mut self,
        family_prefix: Option<&str>,
        status: TaskDefinitionStatus,
        descending: bool,
        after: Option<(&str, i64)>,
        limit: usize,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let status = status.as_str();
        let s = &self.scope;
        // Two statements rather than a dynamic ORDER BY, so both stay cached and use the key.
        let sql = if descending {
            "SELECT family, revision FROM task_definitions
             WHERE account = ?1 AND region = ?2 AND status = ?3 AND family >= ?4 AND family < ?4 || char(1114111)
               AND (?5 IS NULL OR family < ?5 OR (family = ?5 AND revision < ?6))
             ORDER BY family DESC, revision DESC LIMIT ?7"
        } else {
            "SELECT family, revision FROM task_definitions
             WHERE account = ?1 AND region = ?2 AND status = ?3 AND family >= ?4 AND family < ?4 || char(1114111)
               AND (?5 IS NULL OR family > ?5 OR (family = ?5 AND revision > ?6))
             ORDER BY family, revision LIMIT ?7"
        };
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt.query_map(
            params![
                s.account,
                s.region,
                status,
                family_prefix.unwrap_or(""),
                after.map(|a| a.0),
                after.map_or(0, |a| a.1),
                limit as i64
            ],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn list_task_definition_families(
        &mut self,
        family_prefix: Option<&str>,
        status: FamilyStatus,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let s = &self.scope;
        let having = match status {
            FamilyStatus::Active => "HAVING SUM(status = 'ACTIVE') > 0",
            FamilyStatus::Inactive => "HAVING SUM(status = 'ACTIVE') = 0",
            FamilyStatus::All => "",
        };
        let sql = format!(
            "SELECT family FROM task_definitions
             WHERE account = ?1 AND region = ?2 AND family >= ?3 AND family < ?3 || char(1114111) AND family > ?4
             GROUP BY family {having} ORDER BY family LIMIT ?5"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(
            params![
                s.account,
                s.region,
                family_prefix.unwrap_or(""),
                after.unwrap_or(""),
                limit as i64
            ],
            |r| r.get::<_, String>(0),
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn container_instance(&mut self, cluster: &str, id: &str) -> Result<Option<ContainerInstance>, StoreError> {
        let s = &self.scope;
        self.doc(
            "SELECT doc FROM container_instances WHERE account = ?1 AND region = ?2 AND cluster = ?3 AND id = ?4",
            params![s.account, s.region, cluster, id],
        )
    }

    fn put_container_instance(
        &mut self,
        cluster: &str,
        id: &str,
        instance: &ContainerInstance,
    ) -> Result<(), StoreError> {
        let s = &self.scope;
        self.conn
            .prepare_cached(
                "INSERT INTO container_instances (account, region, cluster, id, status, doc) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (account, region, cluster, id) DO UPDATE SET status = excluded.status, doc = excluded.doc",
            )?
            .execute(params![
                s.account,
                s.region,
                cluster,
                id,
                instance.status.as_str(),
                serde_json::to_string(instance)?
            ])?;
        Ok(())
    }

    fn list_container_instances(
        &mut self,
        cluster: &str,
        status: Option<ContainerInstanceStatus>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ContainerInstance>, StoreError> {
        let status = status.map(ContainerInstanceStatus::as_str);
        let s = &self.scope;
        self.docs(
            "SELECT doc FROM container_instances
             WHERE account = ?1 AND region = ?2 AND cluster = ?3 AND (?4 IS NULL AND status <> 'INACTIVE' OR status = ?4) AND id > ?5
             ORDER BY id LIMIT ?6",
            params![s.account, s.region, cluster, status, after.unwrap_or(""), limit as i64],
        )
    }

    fn instance_load(&mut self, cluster: &str, id: &str) -> Result<InstanceLoad, StoreError> {
        Ok(self.usage(cluster, id)?.load())
    }

    fn cluster_loads(&mut self, cluster: &str) -> Result<HashMap<String, InstanceLoad>, StoreError> {
        let s = &self.scope;
        let mut stmt = self.conn.prepare_cached(
            "SELECT instance, doc FROM instance_usage WHERE account = ?1 AND region = ?2 AND cluster = ?3",
        )?;
        let rows = stmt.query_map(params![s.account, s.region, cluster], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut loads = HashMap::new();
        for row in rows {
            let (instance, doc) = row?;
            loads.insert(instance, serde_json::from_str::<Usage>(&doc)?.load());
        }
        Ok(loads)
    }

    fn task(&mut self, cluster: &str, id: &str) -> Result<Option<Task>, StoreError> {
        let s = &self.scope;
        self.doc(
            "SELECT doc FROM tasks WHERE account = ?1 AND region = ?2 AND cluster = ?3 AND id = ?4",
            params![s.account, s.region, cluster, id],
        )
    }

    fn insert_task(&mut self, new: &NewTask<'_>) -> Result<(), StoreError> {
        let s = &self.scope;
        let task = new.task;
        self.conn
            .prepare_cached(
                "INSERT INTO tasks (account, region, cluster, id, container_instance, last_status, desired_status,
                                    family, group_name, started_by, launch_type, client_token, client_request,
                                    reservation, doc)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            )?
            .execute(params![
                s.account,
                s.region,
                new.cluster,
                task.id(),
                new.instance,
                task.last_status.as_str(),
                task.desired_status.as_str(),
                new.family,
                task.group,
                task.started_by,
                task.launch_type,
                new.client_token,
                new.client_request,
                serde_json::to_string(new.reservation)?,
                serde_json::to_string(task)?
            ])?;
        let mut attach = self.conn.prepare_cached(
            "INSERT INTO task_attachments (account, region, cluster, attachment_id, task_id) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for attachment in &task.attachments {
            attach.execute(params![s.account, s.region, new.cluster, attachment.id, task.id()])?;
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
        self.conn
            .prepare_cached(
                "INSERT INTO events (account, region, cluster, detail_type, time, body, notice)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![s.account, s.region, cluster, detail_type, time, body, notice])?;
        Ok(())
    }

    fn task_with_attachment(&mut self, cluster: &str, attachment_id: &str) -> Result<Option<Task>, StoreError> {
        let s = &self.scope;
        self.doc(
            "SELECT t.doc FROM task_attachments a
             JOIN tasks t ON t.account = a.account AND t.region = a.region AND t.cluster = a.cluster AND t.id = a.task_id
             WHERE a.account = ?1 AND a.region = ?2 AND a.cluster = ?3 AND a.attachment_id = ?4",
            params![s.account, s.region, cluster, attachment_id],
        )
    }

    fn tasks_by_client_token(&mut self, cluster: &str, token: &str) -> Result<Vec<(Task, Option<String>)>, StoreError> {
        let s = &self.scope;
        let mut stmt = self.conn.prepare_cached(
            "SELECT doc, client_request FROM tasks
             WHERE account = ?1 AND region = ?2 AND cluster = ?3 AND client_token = ?4 ORDER BY rowid",
        )?;
        let rows = stmt.query_map(params![s.account, s.region, cluster, token], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (doc, request) = row?;
            out.push((serde_json::from_str(&doc)?, request));
        }
        Ok(out)
    }

    fn list_tasks(
        &mut self,
        cluster: &str,
        filter: &TaskFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let s = &self.scope;
        let mut stmt = self.conn.prepare_cached(
            "SELECT id FROM tasks
             WHERE account = ?1 AND region = ?2 AND cluster = ?3 AND desired_status = ?4
               AND (?5 IS NULL OR container_instance = ?5) AND (?6 IS NULL OR family = ?6)
               AND (?7 IS NULL OR started_by = ?7) AND (?8 IS NULL OR launch_type = ?8)
               AND id > ?9
             ORDER BY id LIMIT ?10",
        )?;
        let rows = stmt.query_map(
            params![
                s.account,
                s.region,
                cluster,
                filter.desired_status.as_str(),
                filter.container_instance,
                filter.family,
                filter.started_by,
                filter.launch_type,
                after.unwrap_or(""),
                limit as i64
            ],
            |r| r.get::<_, String>(0),
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn instance_tasks(&mut self, cluster: &str, instance: &str) -> Result<Vec<(Task, Option<TaskStatus>)>, StoreError> {
        let s = &self.scope;
        let mut stmt = self.conn.prepare_cached(
            "SELECT doc, delivered FROM tasks
             WHERE account = ?1 AND region = ?2 AND cluster = ?3 AND container_instance = ?4
               AND last_status <> 'STOPPED'
             ORDER BY id",
        )?;
        let rows = stmt.query_map(params![s.account, s.region, cluster, instance], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (doc, delivered) = row?;
            out.push((
                serde_json::from_str(&doc)?,
                delivered.as_deref().and_then(TaskStatus::parse),
            ));
        }
        Ok(out)
    }

    fn next_message_seq(&mut self, cluster: &str, id: &str, count: i64) -> Result<i64, StoreError> {
        let s = &self.scope;
        let last: i64 = self
            .conn
            .prepare_cached(
                "UPDATE container_instances SET acs_seq = acs_seq + ?5
                 WHERE account = ?1 AND region = ?2 AND cluster = ?3 AND id = ?4
                 RETURNING acs_seq",
            )?
            .query_row(params![s.account, s.region, cluster, id, count], |r| r.get(0))
            .optional()?
            .ok_or_else(|| StoreError::Missing(format!("container instance {id}")))?;
        Ok(last - count + 1)
    }

    fn set_delivered(&mut self, cluster: &str, id: &str, desired: TaskStatus) -> Result<(), StoreError> {
        let s = &self.scope;
        self.conn
            .prepare_cached(
                "UPDATE tasks SET delivered = ?5
                 WHERE account = ?1 AND region = ?2 AND cluster = ?3 AND id = ?4
                   AND (delivered IS NULL OR delivered <> 'STOPPED')",
            )?
            .execute(params![s.account, s.region, cluster, id, desired.as_str()])?;
        Ok(())
    }

    fn agent_holder(&mut self, cluster: &str, id: &str) -> Result<Option<String>, StoreError> {
        let s = &self.scope;
        Ok(self
            .conn
            .prepare_cached(
                "SELECT agent_process FROM container_instances WHERE account = ?1 AND region = ?2 AND cluster = ?3 AND id = ?4",
            )?
            .query_row(params![s.account, s.region, cluster, id], |r| r.get::<_, Option<String>>(0))
            .optional()?
            .flatten())
    }

    fn set_agent_holder(&mut self, cluster: &str, id: &str, process: Option<&str>) -> Result<(), StoreError> {
        let s = &self.scope;
        self.conn
            .prepare_cached(
                "UPDATE container_instances SET agent_process = ?5 WHERE account = ?1 AND region = ?2 AND cluster = ?3 AND id = ?4",
            )?
            .execute(params![s.account, s.region, cluster, id, process])?;
        Ok(())
    }

    fn update_task(&mut self, cluster: &str, task: &Task) -> Result<(), StoreError> {
        let s = &self.scope;
        let before = self
            .conn
            .prepare_cached(
                "SELECT last_status, reservation, COALESCE(group_name, ''), container_instance FROM tasks
                 WHERE account = ?1 AND region = ?2 AND cluster = ?3 AND id = ?4",
            )?
            .query_row(params![s.account, s.region, cluster, task.id()], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?,
                ))
            })
            .optional()?
            .ok_or_else(|| StoreError::Missing(format!("task {}", task.task_arn)))?;
        self.conn
            .prepare_cached(
                "UPDATE tasks SET last_status = ?5, desired_status = ?6, doc = ?7, stopped_at = ?8
                 WHERE account = ?1 AND region = ?2 AND cluster = ?3 AND id = ?4",
            )?
            .execute(params![
                s.account,
                s.region,
                cluster,
                task.id(),
                task.last_status.as_str(),
                task.desired_status.as_str(),
                serde_json::to_string(task)?,
                task.stopped_at
            ])?;
        let (status, reservation, group, instance) = before;
        let from = TaskStatus::parse(&status).unwrap_or(task.last_status);
        if let Some(instance) = instance.filter(|_| from != task.last_status) {
            let reservation: Reservation = serde_json::from_str(&reservation)?;
            let mut usage = self.usage(cluster, &instance)?;
            usage.transition(&reservation, &group, from, task.last_status);
            self.put_usage(cluster, &instance, &usage)?;
        }
        Ok(())
    }
}
