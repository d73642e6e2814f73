//! Storage. A backend ([`Backend`]: the embedded SQLite store, the default, or PostgreSQL) only
//! runs transactions over its [`sql::Sql`]; everything else is written once above it: the
//! stored kinds (`records`, a [`Record`] declaration each), every query of a transaction
//! ([`Tx`], in `tx`), the event log, cursors, sweeps and agent leases ([`Store`], implemented
//! for every backend here) and the schema (`schema`).
//!
//! A handler's work runs as a closure over a [`Tx`], a transaction bound to one account and
//! region: everything the closure reads and writes commits together or not at all, and the
//! caller's answer is sent only once the commit is durable. A closure that returns an error is a
//! domain abort: its writes are rolled back and the error goes back to the caller unchanged.
//! Store failures are typed [`StoreError`]s that handlers turn into `ServerException`.

#[cfg(test)]
mod conformance;
pub mod postgres;
mod records;
mod schema;
pub mod sql;
pub mod sqlite;
mod tx;

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::domain::placement::Reservation;
use crate::domain::records::Task;
use crate::domain::status::TaskStatus;
use crate::domain::{now, Scope};
use sql::{Param, Sql};

pub use postgres::PostgresStore;
pub use records::{Filter, Record, Table};
pub use sqlite::SqliteStore;
pub use tx::Tx;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("database error: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("stored record is unreadable: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("{0} is not stored")]
    Missing(String),
    #[error("the store is shut down")]
    Closed,
    #[error("{0} is in use by another process (one ecsd at a time serves a data folder)")]
    InUse(String),
    #[error("cannot reach PostgreSQL at {target}: {cause}")]
    Connect { target: String, cause: String },
    #[error("the store's worker failed: {0}")]
    Worker(String),
    #[error("a write bound to cluster {bound:?} reached {reached}, which it does not hold")]
    Unheld { bound: String, reached: String },
}

/// Cluster task and instance counts, derived from what is stored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterCounts {
    pub registered_container_instances: i64,
    pub running_tasks: i64,
    pub pending_tasks: i64,
    /// (launch type, running, pending) for each launch type with tasks.
    pub by_launch_type: Vec<(String, i64, i64)>,
    /// ACTIVE services.
    pub active_services: i64,
    /// (launch type, status, count) for ACTIVE and DRAINING services.
    pub services_by_launch_type: Vec<(String, String, i64)>,
}

impl ClusterCounts {
    /// Counts `n` tasks in `status` of `launch_type`.
    pub fn add(&mut self, status: TaskStatus, launch_type: &str, n: i64) {
        let (running, pending) = if status == TaskStatus::Running {
            (n, 0)
        } else if status.is_pending() {
            (0, n)
        } else {
            return;
        };
        self.running_tasks += running;
        self.pending_tasks += pending;
        match self.by_launch_type.iter_mut().find(|(l, _, _)| l == launch_type) {
            Some(entry) => {
                entry.1 += running;
                entry.2 += pending;
            }
            None => self.by_launch_type.push((launch_type.to_owned(), running, pending)),
        }
    }
}

/// Which tasks ListTasks wants.
#[derive(Clone, Debug)]
pub struct TaskFilter {
    pub desired_status: TaskStatus,
    pub container_instance: Option<String>,
    pub family: Option<String>,
    pub started_by: Option<String>,
    pub launch_type: Option<String>,
    /// A service's tasks: the group `service:NAME`.
    pub group: Option<String>,
}

/// Which families ListTaskDefinitionFamilies wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FamilyStatus {
    /// With at least one ACTIVE revision.
    Active,
    /// With no ACTIVE revision.
    Inactive,
    All,
}

/// A task to store for the first time, with what it holds and the client token it came with.
pub struct NewTask<'a> {
    pub client_token: Option<&'a str>,
    /// The fingerprint of the request that came with the client token.
    pub client_request: Option<&'a str>,
    pub task: &'a Task,
    pub reservation: &'a Reservation,
}

/// An instance whose agent connection is held by a process whose lease has lapsed: that
/// process died (or stalled) without recording that the connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LapsedAgent {
    pub scope: Scope,
    pub cluster: String,
    pub id: String,
    /// The process recorded as holding the connection.
    pub process: String,
}

/// A boxed future, so that `Store` can be used as a trait object.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type Erased = Box<dyn Any + Send>;
/// A closure over a transaction with its result and error types erased.
pub type TxFn = Box<dyn FnOnce(&mut Tx<'_>) -> Result<Erased, Erased> + Send>;
/// What a transaction came to: a store failure, or the closure's own result.
pub type TxOutcome = Result<Result<Erased, Erased>, StoreError>;
/// A closure over a backend's open transaction.
pub type SqlFn = Box<dyn FnOnce(&mut dyn Sql) -> TxOutcome + Send>;

/// Which events to read: those after `after`, oldest first, matching every filter given.
#[derive(Clone, Debug, Default)]
pub struct EventQuery {
    pub after: i64,
    pub limit: usize,
    pub account: Option<String>,
    pub region: Option<String>,
    pub cluster: Option<String>,
    pub detail_type: Option<String>,
    /// Only events about this resource (named in the envelope's `resources`).
    pub resource: Option<String>,
    /// Only events that carry a notice for the agent channels.
    pub noticed: bool,
}

/// What background work looks after: a service not yet INACTIVE, or a task ecsd runs itself,
/// by its cluster and name (or id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scheduled {
    pub scope: Scope,
    pub cluster: String,
    pub name: String,
}

/// An event as stored: its sequence number and its envelope as JSON text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    pub seq: i64,
    /// The cluster it is of.
    pub cluster: String,
    pub body: String,
    /// The notice for the agent channels, as stored.
    pub notice: Option<String>,
}

pub struct EventPage {
    pub events: Vec<StoredEvent>,
    /// The highest sequence number committed when the page was read; the page holds nothing
    /// beyond it, so a short page can resume from here.
    pub last_seq: i64,
}

/// What a sweep removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub events: u64,
    pub tasks: u64,
}

/// What a database supplies: transactions over its [`Sql`]. Everything else the store does is
/// written once, over this.
pub trait Backend: Send + Sync + 'static {
    /// Runs `f` in a transaction: a write transaction (serialized with every other writer
    /// whose [`Hold`] overlaps its own, committed durably before the future resolves) or, with
    /// no hold, a read-only snapshot. The writes are
    /// committed when `f` returns `Ok(Ok(_))` and rolled back otherwise.
    fn run(&self, write: Option<Write>, f: SqlFn) -> BoxFuture<TxOutcome>;
    /// A read that may return many rows: kept off the threads that serve requests, where a
    /// backend runs short reads on them.
    fn scan(&self, f: SqlFn) -> BoxFuture<TxOutcome> {
        self.run(None, f)
    }
    /// Changes whenever a write is committed (here or, for a shared database, by another
    /// process), so that readers of events can wait for more.
    fn commits(&self) -> tokio::sync::watch::Receiver<u64>;
    /// Finishes what is queued and releases the database; later transactions fail. Blocking.
    fn close(&self) {}
}

/// The store. Use [`StoreExt::read`] and [`StoreExt::write`], which keep the types.
pub trait Store: Send + Sync + 'static {
    /// Runs `f` in a transaction of `scope`. Writes are committed durably before the future
    /// resolves; a closure that returns `Err` has its writes rolled back.
    fn transact(&self, scope: Scope, access: Access, f: TxFn) -> BoxFuture<TxOutcome>;
    /// Events in sequence order. Sequence numbers are never reused and a reader never sees one
    /// before every smaller one is visible.
    fn events(&self, query: EventQuery) -> BoxFuture<Result<EventPage, StoreError>>;
    /// A named, durable position in the event sequence (a webhook's delivery cursor); 0 if unset.
    fn cursor(&self, name: String) -> BoxFuture<Result<i64, StoreError>>;
    fn set_cursor(&self, name: String, seq: i64) -> BoxFuture<Result<(), StoreError>>;
    /// Removes events older than `events_before`, tasks STOPPED before `stopped_tasks_before`
    /// and expired console sessions.
    fn sweep(&self, events_before: f64, stopped_tasks_before: f64) -> BoxFuture<Result<Swept, StoreError>>;
    /// Extends a process's lease on the agent connections it holds to `ttl` from now (by the
    /// store's clock, which every process sharing the store agrees on).
    fn renew_lease(&self, process: String, ttl: Duration) -> BoxFuture<Result<(), StoreError>>;
    /// Ends a process's lease: it holds no connection any more.
    fn end_lease(&self, process: String) -> BoxFuture<Result<(), StoreError>>;
    /// The instances whose agent connection is held by a process without a live lease.
    fn lapsed_agents(&self) -> BoxFuture<Result<Vec<LapsedAgent>, StoreError>>;
    /// Every service of every account and region that is not INACTIVE.
    fn scheduled_services(&self) -> BoxFuture<Result<Vec<Scheduled>, StoreError>>;
    /// Every task of every account and region that ecsd runs itself (Fargate) and that has not
    /// stopped.
    fn hosted_tasks(&self) -> BoxFuture<Result<Vec<Scheduled>, StoreError>>;
    /// Every ACTIVE capacity provider of an Auto Scaling group, of every account and region
    /// (by name; no cluster).
    fn capacity_providers(&self) -> BoxFuture<Result<Vec<Scheduled>, StoreError>>;
    /// Changes whenever a write is committed, so that readers of events can wait for more.
    fn commits(&self) -> tokio::sync::watch::Receiver<u64>;
    /// Finishes what is queued and releases the store; later transactions fail. Blocking.
    fn close(&self);
}

/// What `query` (account, region, cluster, name) lists.
fn scheduled<B: Backend + ?Sized>(backend: &B, query: &'static str) -> BoxFuture<Result<Vec<Scheduled>, StoreError>> {
    run_sql(backend, Access::Read, move |sql| {
        sql.query(query, &[])?
            .iter()
            .map(|r| {
                Ok(Scheduled {
                    scope: Scope::new(r.text(0)?, r.text(1)?),
                    cluster: r.text(2)?.to_owned(),
                    name: r.text(3)?.to_owned(),
                })
            })
            .collect()
    })
}

/// What a write holds against the writes of other commit groups (other processes' included)
/// until it commits: two writes whose holds overlap never run at once. A write bound to one
/// cluster may reach nothing else ([`Tx`] refuses), so writes to different clusters need not
/// wait for each other.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Hold {
    /// Everything (a sweep through every scope).
    All,
    /// The store's own rows that one statement changes (a process's lease, a delivery
    /// cursor), and nothing else.
    Bookkeeping,
    /// Everything of one scope.
    Scope(Scope),
    /// One cluster of a scope: its records, and reads (not changes) of its scope's own, such as
    /// task definitions and settings.
    Cluster(Scope, String),
}

/// A record a write will read, named before it runs: a backend across the network reads it with
/// the other writes' of the write's commit group, all at once, instead of one round trip each.
/// It is the read [`Tx::get`] makes of the record (the statement and its parameters).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ReadAhead {
    pub statement: String,
    pub params: Vec<String>,
}

/// A write: what it holds, and what it will read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    pub hold: Hold,
    pub ahead: Vec<ReadAhead>,
}

impl From<Hold> for Write {
    fn from(hold: Hold) -> Self {
        Write {
            hold,
            ahead: Vec::new(),
        }
    }
}

/// How a transaction runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// Serialized with every other writer of an overlapping hold, committed durably before it
    /// is answered.
    Write(Write),
    /// A short read-only snapshot.
    Read,
    /// A read-only snapshot that may go through many rows (background passes, the event log).
    Scan,
}

impl Access {
    fn run<B: Backend + ?Sized>(self, backend: &B, f: SqlFn) -> BoxFuture<TxOutcome> {
        match self {
            Access::Write(write) => backend.run(Some(write), f),
            Access::Read => backend.run(None, f),
            Access::Scan => backend.scan(f),
        }
    }
}

/// Runs `f` over a backend's transaction and hands back what it returned.
fn run_sql<B: Backend + ?Sized, R: Send + 'static>(
    backend: &B,
    access: Access,
    f: impl FnOnce(&mut dyn Sql) -> Result<R, StoreError> + Send + 'static,
) -> BoxFuture<Result<R, StoreError>> {
    let f: SqlFn = Box::new(move |sql| match f(sql) {
        Ok(value) => Ok(Ok(Box::new(value) as Erased)),
        Err(e) => Ok(Err(Box::new(e) as Erased)),
    });
    let outcome = access.run(backend, f);
    Box::pin(async move { unerase::<R, StoreError>(outcome.await) })
}

impl<B: Backend> Store for B {
    fn transact(&self, scope: Scope, access: Access, f: TxFn) -> BoxFuture<TxOutcome> {
        let bound = match &access {
            Access::Write(Write {
                hold: Hold::Cluster(_, cluster),
                ..
            }) => Some(cluster.clone()),
            _ => None,
        };
        access.run(self, Box::new(move |sql| Ok(f(&mut Tx::bound(sql, scope, bound)))))
    }

    fn events(&self, query: EventQuery) -> BoxFuture<Result<EventPage, StoreError>> {
        // The envelope as stored names its resources so (compact JSON); `%` and `_` of the
        // name are matched as themselves.
        let resource = query.resource.as_ref().map(|arn| {
            let literal = serde_json::to_string(arn).unwrap_or_default();
            let escaped: String = literal
                .chars()
                .flat_map(|c| match c {
                    '%' | '_' | '\\' => vec!['\\', c],
                    c => vec![c],
                })
                .collect();
            format!("%\"resources\":[{escaped}]%")
        });
        run_sql(self, Access::Scan, move |sql| {
            // The head first, and the page up to it: every number up to the counter's value is
            // committed (numbers are taken in commit order), while a head read after the
            // page could cover events committed in between and missing from it.
            let head = sql
                .query_one("SELECT value FROM counters WHERE name = 'event'", &[])?
                .int(0)?;
            let rows = sql.query(
                "SELECT seq, body, notice, cluster FROM events
                 WHERE seq > $1 AND seq <= $7 AND (CAST($2 AS TEXT) IS NULL OR account = $2)
                   AND (CAST($3 AS TEXT) IS NULL OR region = $3)
                   AND (CAST($4 AS TEXT) IS NULL OR cluster = $4) AND (CAST($5 AS TEXT) IS NULL OR detail_type = $5)
                   AND (NOT $8 OR notice IS NOT NULL)
                   AND (CAST($9 AS TEXT) IS NULL OR body LIKE $9 ESCAPE '\\')
                 ORDER BY seq LIMIT $6",
                &[
                    query.after.into(),
                    query.account.as_deref().into(),
                    query.region.as_deref().into(),
                    query.cluster.as_deref().into(),
                    query.detail_type.as_deref().into(),
                    Param::Int(i64::try_from(query.limit).unwrap_or(i64::MAX)),
                    head.into(),
                    query.noticed.into(),
                    resource.as_deref().into(),
                ],
            )?;
            let events = rows
                .iter()
                .map(|r| {
                    Ok(StoredEvent {
                        seq: r.int(0)?,
                        body: r.text(1)?.to_owned(),
                        notice: r.opt_text(2)?.map(str::to_owned),
                        cluster: r.text(3)?.to_owned(),
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            Ok(EventPage { events, last_seq: head })
        })
    }

    fn cursor(&self, name: String) -> BoxFuture<Result<i64, StoreError>> {
        run_sql(self, Access::Read, move |sql| {
            sql.query_opt("SELECT seq FROM cursors WHERE name = $1", &[name.as_str().into()])?
                .map_or(Ok(0), |r| r.int(0))
        })
    }

    fn set_cursor(&self, name: String, seq: i64) -> BoxFuture<Result<(), StoreError>> {
        run_sql(self, Access::Write(Hold::Bookkeeping.into()), move |sql| {
            sql.execute(
                "INSERT INTO cursors (name, seq) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET seq = excluded.seq",
                &[name.as_str().into(), seq.into()],
            )?;
            Ok(())
        })
    }

    fn sweep(&self, events_before: f64, stopped_tasks_before: f64) -> BoxFuture<Result<Swept, StoreError>> {
        run_sql(self, Access::Write(Hold::All.into()), move |sql| {
            let events = sql.execute("DELETE FROM events WHERE time < $1", &[events_before.into()])?;
            sql.execute(
                "DELETE FROM task_attachments WHERE (account, region, cluster, task_id) IN
                   (SELECT account, region, cluster, id FROM tasks WHERE last_status = 'STOPPED' AND stopped_at < $1)",
                &[stopped_tasks_before.into()],
            )?;
            let tasks = sql.execute(
                "DELETE FROM tasks WHERE last_status = 'STOPPED' AND stopped_at < $1",
                &[stopped_tasks_before.into()],
            )?;
            sql.execute("DELETE FROM console_sessions WHERE expires_at < $1", &[now().into()])?;
            Ok(Swept { events, tasks })
        })
    }

    fn renew_lease(&self, process: String, ttl: Duration) -> BoxFuture<Result<(), StoreError>> {
        // The database's clock: processes on several hosts need not agree on theirs.
        let ttl = ttl.as_secs_f64();
        run_sql(self, Access::Write(Hold::Bookkeeping.into()), move |sql| {
            sql.execute(
                "INSERT INTO processes (id, expires_at) VALUES ($1, {now} + $2)
                 ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at",
                &[process.as_str().into(), ttl.into()],
            )?;
            Ok(())
        })
    }

    fn end_lease(&self, process: String) -> BoxFuture<Result<(), StoreError>> {
        run_sql(self, Access::Write(Hold::Bookkeeping.into()), move |sql| {
            sql.execute("DELETE FROM processes WHERE id = $1", &[process.as_str().into()])?;
            Ok(())
        })
    }

    fn lapsed_agents(&self) -> BoxFuture<Result<Vec<LapsedAgent>, StoreError>> {
        run_sql(self, Access::Read, move |sql| {
            sql.query(
                "SELECT account, region, cluster, id, agent_process FROM container_instances c
                 WHERE agent_process IS NOT NULL
                   AND NOT EXISTS (SELECT 1 FROM processes p WHERE p.id = c.agent_process AND p.expires_at > {now})",
                &[],
            )?
            .iter()
            .map(|r| {
                Ok(LapsedAgent {
                    scope: Scope::new(r.text(0)?, r.text(1)?),
                    cluster: r.text(2)?.to_owned(),
                    id: r.text(3)?.to_owned(),
                    process: r.text(4)?.to_owned(),
                })
            })
            .collect()
        })
    }

    fn scheduled_services(&self) -> BoxFuture<Result<Vec<Scheduled>, StoreError>> {
        scheduled(
            self,
            "SELECT account, region, cluster, name FROM services WHERE status <> 'INACTIVE'",
        )
    }

    fn capacity_providers(&self) -> BoxFuture<Result<Vec<Scheduled>, StoreError>> {
        scheduled(
            self,
            "SELECT account, region, '', name FROM capacity_providers WHERE status = 'ACTIVE'",
        )
    }

    fn hosted_tasks(&self) -> BoxFuture<Result<Vec<Scheduled>, StoreError>> {
        scheduled(
            self,
            "SELECT account, region, cluster, id FROM tasks WHERE launch_type = 'FARGATE' AND last_status <> 'STOPPED'",
        )
    }

    fn commits(&self) -> tokio::sync::watch::Receiver<u64> {
        Backend::commits(self)
    }

    fn close(&self) {
        Backend::close(self)
    }
}

pub trait StoreExt {
    fn read<R, E, F>(&self, scope: &Scope, f: F) -> impl Future<Output = Result<R, E>> + Send
    where
        F: FnOnce(&mut Tx<'_>) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static;

    fn write<R, E, F>(&self, scope: &Scope, f: F) -> impl Future<Output = Result<R, E>> + Send
    where
        F: FnOnce(&mut Tx<'_>) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static;

    /// A write that reaches only `cluster` of the scope (and reads the scope's own records):
    /// it does not wait for writes to other clusters. See [`Hold::Cluster`].
    fn write_in<R, E, F>(&self, scope: &Scope, cluster: &str, f: F) -> impl Future<Output = Result<R, E>> + Send
    where
        F: FnOnce(&mut Tx<'_>) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static;

    /// [`StoreExt::write_in`], naming records it will read ([`ReadAhead`]).
    fn write_in_reading<R, E, F>(
        &self,
        scope: &Scope,
        cluster: &str,
        ahead: Vec<ReadAhead>,
        f: F,
    ) -> impl Future<Output = Result<R, E>> + Send
    where
        F: FnOnce(&mut Tx<'_>) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static;

    /// A read that may go through many rows (see [`Access::Scan`]).
    fn scan<R, E, F>(&self, scope: &Scope, f: F) -> impl Future<Output = Result<R, E>> + Send
    where
        F: FnOnce(&mut Tx<'_>) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static;
}

impl StoreExt for dyn Store {
    fn read<R, E, F>(&self, scope: &Scope, f: F) -> impl Future<Output = Result<R, E>> + Send
    where
        F: FnOnce(&mut Tx<'_>) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        typed(self, scope, Access::Read, f)
    }

    fn write<R, E, F>(&self, scope: &Scope, f: F) -> impl Future<Output = Result<R, E>> + Send
    where
        F: FnOnce(&mut Tx<'_>) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        typed(self, scope, Access::Write(Hold::Scope(scope.clone()).into()), f)
    }

    fn write_in<R, E, F>(&self, scope: &Scope, cluster: &str, f: F) -> impl Future<Output = Result<R, E>> + Send
    where
        F: FnOnce(&mut Tx<'_>) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        self.write_in_reading(scope, cluster, Vec::new(), f)
    }

    fn write_in_reading<R, E, F>(
        &self,
        scope: &Scope,
        cluster: &str,
        ahead: Vec<ReadAhead>,
        f: F,
    ) -> impl Future<Output = Result<R, E>> + Send
    where
        F: FnOnce(&mut Tx<'_>) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let write = Write {
            hold: Hold::Cluster(scope.clone(), cluster.to_owned()),
            ahead,
        };
        typed(self, scope, Access::Write(write), f)
    }

    fn scan<R, E, F>(&self, scope: &Scope, f: F) -> impl Future<Output = Result<R, E>> + Send
    where
        F: FnOnce(&mut Tx<'_>) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        typed(self, scope, Access::Scan, f)
    }
}

/// A transaction whose closure's own types survive the type-erased [`Store::transact`].
fn typed<R, E, F>(store: &dyn Store, scope: &Scope, access: Access, f: F) -> impl Future<Output = Result<R, E>> + Send
where
    F: FnOnce(&mut Tx<'_>) -> Result<R, E> + Send + 'static,
    R: Send + 'static,
    E: From<StoreError> + Send + 'static,
{
    let erased: TxFn = Box::new(move |tx| erase(f(tx)));
    let fut = store.transact(scope.clone(), access, erased);
    async move { unerase(fut.await) }
}

/// Answers a commit group's writes once its commit is known: each its own outcome if the group
/// committed, the commit's failure otherwise.
fn settle(
    committed: Result<(), String>,
    started: std::time::Instant,
    answers: Vec<(tokio::sync::oneshot::Sender<TxOutcome>, TxOutcome)>,
    commits: &tokio::sync::watch::Sender<u64>,
) {
    let size = answers.len();
    match committed {
        Ok(()) => {
            metrics::histogram!(crate::monitoring::COMMIT_SECONDS).record(started.elapsed().as_secs_f64());
            metrics::histogram!(crate::monitoring::COMMIT_GROUP).record(size as f64);
            commits.send_modify(|n| *n += 1);
            for (reply, outcome) in answers {
                let _ = reply.send(outcome);
            }
        }
        Err(message) => {
            tracing::error!(error = %message, "commit failed");
            for (reply, _) in answers {
                let _ = reply.send(Err(StoreError::Worker(format!("commit failed: {message}"))));
            }
        }
    }
}

fn erase<R: Send + 'static, E: Send + 'static>(r: Result<R, E>) -> Result<Erased, Erased> {
    match r {
        Ok(v) => Ok(Box::new(v)),
        Err(e) => Err(Box::new(e)),
    }
}

fn unerase<R: 'static, E: From<StoreError> + 'static>(r: Result<Result<Erased, Erased>, StoreError>) -> Result<R, E> {
    let mismatch = || E::from(StoreError::Worker("a transaction returned an unexpected type".into()));
    match r {
        Err(e) => Err(E::from(e)),
        Ok(Ok(v)) => v.downcast::<R>().map(|v| *v).map_err(|_| mismatch()),
        Ok(Err(e)) => Err(e.downcast::<E>().map(|e| *e).unwrap_or_else(|_| mismatch())),
    }
}
