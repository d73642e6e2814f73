//! The shared store: PostgreSQL, for several ecsd processes behind one load balancer.
//!
//! Writes are committed in groups, as on SQLite: one writer thread per process takes every
//! write queued while the previous group committed, runs each in a savepoint of one READ
//! COMMITTED transaction (a write whose closure fails rolls back to its savepoint, alone), and
//! commits them together, answering none before the commit. Each group first takes one
//! transaction-scoped advisory lock, so the groups of every process run one at a time: no lost
//! update, no overcommitted instance, and event sequence numbers that are committed in order (a
//! reader can never see event N+1 before event N); the lock and the commit cost once per group,
//! not once per write. Reads run as REPEATABLE READ, READ ONLY snapshots on a pool and are not
//! serialized. Nothing is needed from the database beyond a plain schema: no extension, no
//! special isolation level. Handlers' closures are synchronous; they run on blocking threads and
//! drive the async driver there.

use std::time::Duration;

use bytes::BytesMut;
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::{IsolationLevel, NoTls};

use super::schema::MIGRATIONS;
use super::sql::{Cell, Dialect, Param, Row, Sql};
use super::{Backend, BoxFuture, SqlFn, StoreError, TxOutcome};

/// Every write transaction of every process takes this advisory lock first.
const WRITE_LOCK: i64 = 0x6563_7364_7772_6974; // "ecsdwrit"
/// Migrations run under this one, by one process at a time.
const MIGRATION_LOCK: i64 = 0x6563_7364_6d69_6772; // "ecsdmigr"
const POOL_SIZE: usize = 16;
/// The most writes one commit takes.
const MAX_GROUP: usize = 256;

struct Job {
    work: SqlFn,
    reply: tokio::sync::oneshot::Sender<TxOutcome>,
}
/// How often a process looks for events committed by other processes.
const EVENT_POLL: Duration = Duration::from_millis(200);

pub struct PostgresStore {
    pool: Pool,
    commits: watch::Sender<u64>,
    poller: tokio::task::JoinHandle<()>,
    jobs: std::sync::Mutex<Option<std::sync::mpsc::Sender<Job>>>,
    writer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user@host:port/db`) and migrates the schema.
    pub async fn open(url: &str) -> Result<PostgresStore, StoreError> {
        let config: tokio_postgres::Config = url.parse().map_err(|e| StoreError::Connect {
            target: format!("{url:?}"),
            cause: format!(
                "not a PostgreSQL URL (postgres://USER@HOST:PORT/DATABASE): {}",
                causes(&e)
            ),
        })?;
        let target = describe(&config);
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
        migrate(&pool).await.map_err(|e| match e {
            StoreError::Postgres(e) => StoreError::Connect {
                target: target.clone(),
                cause: causes(&e),
            },
            StoreError::Worker(cause) => StoreError::Connect {
                target: target.clone(),
                cause,
            },
            other => other,
        })?;
        let (commits, _) = watch::channel(0);
        let poller = tokio::spawn(poll_events(pool.clone(), commits.clone()));
        let (jobs, queue) = std::sync::mpsc::channel();
        let (rt, writer_pool, writer_commits) = (Handle::current(), pool.clone(), commits.clone());
        let writer = std::thread::Builder::new()
            .name("ecsd-postgres-writer".into())
            .spawn(move || write_loop(&rt, &writer_pool, &queue, &writer_commits))
            .map_err(|e| StoreError::Worker(e.to_string()))?;
        Ok(PostgresStore {
            pool,
            commits,
            poller,
            jobs: std::sync::Mutex::new(Some(jobs)),
            writer: std::sync::Mutex::new(Some(writer)),
        })
    }

    /// Queues `work` for the writer's next commit group.
    fn submit(&self, work: SqlFn) -> BoxFuture<TxOutcome> {
        let (reply, answer) = tokio::sync::oneshot::channel();
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
        drop(self.jobs.lock().map(|mut j| j.take()));
    }
}

/// The writer: groups what is queued, commits each group, answers after the commit.
fn write_loop(rt: &Handle, pool: &Pool, queue: &std::sync::mpsc::Receiver<Job>, commits: &watch::Sender<u64>) {
    let mut client: Option<deadpool_postgres::Object> = None;
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        // A connection the database dropped is replaced before the next group.
        if client.as_ref().is_some_and(|c| c.is_closed()) {
            client = None;
        }
        let conn = match client.take() {
            Some(conn) => Ok(conn),
            None => rt.block_on(pool.get()).map_err(|e| StoreError::Worker(causes(&e))),
        };
        match conn {
            Ok(mut conn) => {
                commit_group(rt, &mut conn, group, commits);
                client = Some(conn);
            }
            Err(e) => {
                for job in group {
                    let _ = job.reply.send(Err(StoreError::Worker(e.to_string())));
                }
            }
        }
    }
}

fn commit_group(rt: &Handle, client: &mut deadpool_postgres::Object, group: Vec<Job>, commits: &watch::Sender<u64>) {
    let started = std::time::Instant::now();
    let size = group.len();
    // The bookkeeping travels with the statements: the transaction, the lock and the first
    // savepoint go out with the first write's first statement; each write's ending (releasing
    // its savepoint and setting the next, or rolling back to it) with the next write's first
    // statement, or with the commit. A round trip per statement, none for the bookkeeping.
    let mut prelude = Some(format!(
        "BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock({WRITE_LOCK}); SAVEPOINT ecsd_write"
    ));
    let mut answers = Vec::with_capacity(size);
    let mut broken: Option<String> = None;
    for (i, Job { work, reply }) in group.into_iter().enumerate() {
        if let Some(why) = &broken {
            let _ = reply.send(Err(StoreError::Worker(why.clone())));
            continue;
        }
        let mut conn = Conn {
            client: &*client,
            rt,
            prelude: prelude.take(),
            failed: None,
        };
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&mut conn)))
            .unwrap_or_else(|_| Err(StoreError::Worker("a write panicked".into())));
        if let Some(why) = conn.failed.take() {
            broken = Some(why);
            answers.push((reply, result));
            continue;
        }
        // A write that ran no statement still owes what came before it.
        let owed = conn.prelude.take();
        let kept = matches!(result, Ok(Ok(_)));
        let ending = match (kept, i + 1 == size) {
            (true, true) => None,
            (true, false) => Some("RELEASE SAVEPOINT ecsd_write; SAVEPOINT ecsd_write"),
            // Rolling back to the savepoint keeps it, for the next write.
            (false, _) => Some("ROLLBACK TO SAVEPOINT ecsd_write"),
        };
        prelude = match (owed, ending) {
            (Some(owed), Some(ending)) => Some(format!("{owed}; {ending}")),
            (owed, ending) => owed.or(ending.map(str::to_owned)),
        };
        answers.push((reply, result));
    }
    let committed = match broken {
        Some(why) => {
            let _ = rt.block_on(client.batch_execute("ROLLBACK"));
            Err(why)
        }
        None => {
            let commit = prelude.map_or_else(|| "COMMIT".to_owned(), |p| format!("{p}; COMMIT"));
            rt.block_on(client.batch_execute(&commit)).map_err(|e| causes(&e))
        }
    };
    super::settle(committed, started, answers, commits);
}

/// Where a configuration points: host, port, database and user.
fn describe(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{host}:{port}, database {:?} as user {:?}",
        config.get_dbname().unwrap_or("(the user's)"),
        config.get_user().unwrap_or("(none given)")
    )
}

/// An error with every cause under it, as the database put it ("db error: ERROR: database
/// \"x\" does not exist"), not only the driver's summary.
fn causes(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

async fn migrate(pool: &Pool) -> Result<(), StoreError> {
    let mut client = pool.get().await.map_err(|e| StoreError::Worker(causes(&e)))?;
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
            tx.batch_execute(step.text(Dialect::Postgres)).await?;
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

impl Backend for PostgresStore {
    fn run(&self, write: bool, f: SqlFn) -> BoxFuture<TxOutcome> {
        if write {
            return self.submit(f);
        }
        self.blocking(move |rt, mut client| {
            let tx = rt.block_on(
                client
                    .build_transaction()
                    .isolation_level(IsolationLevel::RepeatableRead)
                    .read_only(true)
                    .start(),
            )?;
            let result = {
                let mut conn = Conn {
                    client: &tx,
                    rt,
                    prelude: None,
                    failed: None,
                };
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || f(&mut conn)))
                    .map_err(|_| StoreError::Worker("a transaction panicked".into()))?
            };
            // A read changes nothing: it ends the same whichever way it went.
            rt.block_on(tx.rollback())?;
            result
        })
    }

    fn close(&self) {
        drop(self.jobs.lock().map(|mut j| j.take()));
        if let Some(handle) = self.writer.lock().ok().and_then(|mut w| w.take()) {
            let _ = handle.join();
        }
    }

    fn commits(&self) -> watch::Receiver<u64> {
        self.commits.subscribe()
    }
}

/// An open transaction (a read's, or the writer's session inside its group), driven from a
/// blocking thread.
struct Conn<'a, C: GenericClient> {
    client: &'a C,
    rt: &'a Handle,
    /// Statements owed before the next one (a write group's bookkeeping), sent with it in one
    /// round trip.
    prelude: Option<String>,
    /// Why the owed statements failed: the group's transaction is lost.
    failed: Option<String>,
}

impl<C: GenericClient> Conn<'_, C> {
    /// Runs `f` on the connection, after what is owed, in the same round trip (the driver
    /// pipelines requests that are in flight together, and the server runs them in order).
    fn run<T>(&mut self, f: impl std::future::Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        let Some(prelude) = self.prelude.take() else {
            return self.rt.block_on(f);
        };
        let client = self.client;
        let (before, result) = self
            .rt
            .block_on(async { tokio::join!(client.batch_execute(&prelude), f) });
        if let Err(e) = before {
            let why = causes(&e);
            self.failed = Some(why.clone());
            return Err(StoreError::Worker(why));
        }
        result
    }
}

impl ToSql for Param<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match *self {
            Param::Null => Ok(IsNull::Yes),
            Param::Text(v) => v.to_sql(ty, out),
            Param::Int(v) => v.to_sql(ty, out),
            Param::Real(v) => v.to_sql(ty, out),
            Param::Bool(v) => v.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        // Each value checks its type when it is written, in `to_sql`.
        true
    }

    to_sql_checked!();
}

fn cells(row: &tokio_postgres::Row) -> Result<Row, StoreError> {
    let mut out = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let ty = column.type_();
        let cell = if *ty == Type::INT8 {
            row.try_get::<_, Option<i64>>(i)?.map(Cell::Int)
        } else if *ty == Type::INT4 {
            row.try_get::<_, Option<i32>>(i)?.map(|v| Cell::Int(v.into()))
        } else if *ty == Type::FLOAT8 {
            row.try_get::<_, Option<f64>>(i)?.map(Cell::Real)
        } else if *ty == Type::BOOL {
            row.try_get::<_, Option<bool>>(i)?.map(|v| Cell::Int(v.into()))
        } else {
            row.try_get::<_, Option<String>>(i)?.map(Cell::Text)
        };
        out.push(cell.unwrap_or(Cell::Null));
    }
    Ok(Row(out))
}

impl<C: GenericClient> Sql for Conn<'_, C> {
    fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, StoreError> {
        let client = self.client;
        self.run(async move {
            let stmt = client.prepare_cached(&Dialect::Postgres.render(sql)).await?;
            let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
            client.query(&stmt, &params).await?.iter().map(cells).collect()
        })
    }

    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, StoreError> {
        let client = self.client;
        self.run(async move {
            let stmt = client.prepare_cached(&Dialect::Postgres.render(sql)).await?;
            let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
            Ok(client.execute(&stmt, &params).await?)
        })
    }

    fn execute_each(&mut self, statements: &[(&str, &[Param<'_>])]) -> Result<Vec<u64>, StoreError> {
        let client = self.client;
        self.run(async move {
            let mut prepared = Vec::with_capacity(statements.len());
            for (sql, params) in statements {
                let stmt = client.prepare_cached(&Dialect::Postgres.render(sql)).await?;
                let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
                prepared.push((stmt, params));
            }
            // In flight together: one round trip for all of them.
            let runs = prepared.iter().map(|(stmt, params)| client.execute(stmt, params));
            Ok(futures_util::future::try_join_all(runs).await?)
        })
    }
}
