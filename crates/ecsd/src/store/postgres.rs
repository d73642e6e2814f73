//! The shared store: PostgreSQL, for several ecsd processes behind one load balancer.
//!
//! Writes are committed in groups, as on SQLite, by a few writers per process, each with a
//! connection of its own: a writer takes every write queued for it while its previous group
//! committed, runs them in one READ COMMITTED transaction (a write whose closure fails is rolled
//! back alone, see below) and commits them together, answering none before the commit.
//!
//! What keeps concurrent groups (of this process's writers and of every other process) from
//! losing an update or overcommitting an instance is the [`Hold`] of each write, taken as
//! transaction-scoped advisory locks: a write bound to one cluster holds that cluster, a write
//! of a scope the whole scope, a sweep everything. Writes of the same hold go to the same writer
//! and share its groups. A group waits for locks only while it holds none; holding some, it only
//! tries, and ends before a write whose locks another holds, so no two groups ever wait for each
//! other. Events are numbered when their group commits, in the statement before the commit: the
//! counter's row is locked from there to the commit, so numbers are taken in commit order and a
//! reader that sees the counter at N sees every event up to N.
//!
//! Round trips are what a group pays for. The records its writes name ahead ([`ReadAhead`]) are
//! read in the round trip that takes its locks; what any of its writes read or changed of a
//! record is remembered for the group's later writes (nobody else can change it under the
//! group's locks), as are reads of a table's rows until a write of the group changes that table;
//! what a write put there is forgotten if it is rolled back. A write's changes go with the next
//! statement or the commit, and a write takes a savepoint only if it sends a statement.
//!
//! Reads run as REPEATABLE READ, READ ONLY snapshots on a pool and wait for nothing. Nothing is
//! needed from the database beyond a plain schema: no extension, no special isolation level.
//! Handlers' closures are synchronous; they run on blocking threads (a writer's is its own) and
//! drive the async driver there.

use std::time::Duration;

use bytes::BytesMut;
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::{IsolationLevel, NoTls};

use super::schema::MIGRATIONS;
use super::sql::{first_doc, Cell, Dialect, NewEvent, Param, Row, Sql};
use super::{Backend, BoxFuture, Hold, ReadAhead, SqlFn, StoreError, TxOutcome, Write};

/// Migrations run under this one, by one process at a time.
const MIGRATION_LOCK: i64 = 0x6563_7364_6d69_6772; // "ecsdmigr"
const POOL_SIZE: usize = 16;
/// The most writes one commit takes.
const MAX_GROUP: usize = 256;

/// Writers of one process, each with its own connection and commit groups.
const LANES: usize = 4;

struct Job {
    hold: Hold,
    ahead: Vec<ReadAhead>,
    work: SqlFn,
    reply: tokio::sync::oneshot::Sender<TxOutcome>,
}
/// How often a process looks for events committed by other processes.
const EVENT_POLL: Duration = Duration::from_millis(200);

pub struct PostgresStore {
    pool: Pool,
    commits: watch::Sender<u64>,
    poller: tokio::task::JoinHandle<()>,
    lanes: std::sync::Mutex<Option<Vec<std::sync::mpsc::Sender<Job>>>>,
    writers: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
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
        let pool = new_pool(config.clone(), POOL_SIZE)?;
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
        let (mut lanes, mut writers) = (Vec::new(), Vec::new());
        for lane in 0..LANES {
            let (jobs, queue) = std::sync::mpsc::channel();
            // Each writer's connection is its own, driven by the writer's own runtime (see
            // `write_loop`).
            let writer_pool = new_pool(config.clone(), 1)?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| StoreError::Worker(e.to_string()))?;
            let writer_commits = commits.clone();
            let writer = std::thread::Builder::new()
                .name(format!("ecsd-postgres-writer-{lane}"))
                .spawn(move || write_loop(&runtime, &writer_pool, &queue, &writer_commits))
                .map_err(|e| StoreError::Worker(e.to_string()))?;
            lanes.push(jobs);
            writers.push(writer);
        }
        Ok(PostgresStore {
            pool,
            commits,
            poller,
            lanes: std::sync::Mutex::new(Some(lanes)),
            writers: std::sync::Mutex::new(writers),
        })
    }

    /// Queues `work` for a writer's next commit group: writes of the same hold meet in the same
    /// writer, where they share a group rather than wait for each other's.
    fn submit(&self, Write { hold, ahead }: Write, work: SqlFn) -> BoxFuture<TxOutcome> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let lane = {
            use std::hash::{BuildHasher, BuildHasherDefault};
            let hash = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(&hold);
            (hash % LANES as u64) as usize
        };
        let sent = self.lanes.lock().ok().and_then(|lanes| {
            lanes.as_ref().map(|l| {
                l[lane].send(Job {
                    hold,
                    ahead,
                    work,
                    reply,
                })
            })
        });
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
        drop(self.lanes.lock().map(|mut l| l.take()));
    }
}

fn new_pool(config: tokio_postgres::Config, size: usize) -> Result<Pool, StoreError> {
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .build()
        .map_err(|e| StoreError::Worker(e.to_string()))
}

/// A writer: groups what is queued, commits each group, answers after the commit.
///
/// Its connection is opened inside `rt`, a runtime of its own on the writer's thread, so the
/// connection's socket is polled by the thread that waits for its answers: a statement's answer
/// wakes the writer at once instead of waiting for a busy request worker to poll the socket and
/// hand the answer over (every statement of a group pays that latency, one after another).
fn write_loop(
    rt: &tokio::runtime::Runtime,
    pool: &Pool,
    queue: &std::sync::mpsc::Receiver<Job>,
    commits: &watch::Sender<u64>,
) {
    let mut client: Option<deadpool_postgres::Object> = None;
    // Writes not yet run: a group may end before the write at the front, which opens the next.
    let mut waiting = std::collections::VecDeque::new();
    loop {
        if waiting.is_empty() {
            match queue.recv() {
                Ok(job) => waiting.push_back(job),
                Err(_) => return,
            }
        }
        while waiting.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => waiting.push_back(job),
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
                commit_group(rt, &mut conn, &mut waiting, commits);
                client = Some(conn);
            }
            Err(e) => {
                for job in waiting.drain(..) {
                    let _ = job.reply.send(Err(StoreError::Worker(e.to_string())));
                }
            }
        }
    }
}

/// One advisory lock of the database: its key, and whether it is shared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Lock {
    key: i64,
    shared: bool,
}

impl Lock {
    fn new(shared: bool, parts: &[&str]) -> Lock {
        // Every process must derive the same key from the same name, whatever it was built
        // with: a hash whose definition does not change.
        use sha2::Digest;
        let mut hash = sha2::Sha256::new();
        hash.update(b"ecsd write lock");
        for part in parts {
            hash.update([0]);
            hash.update(part.as_bytes());
        }
        let digest = hash.finalize();
        let mut key = [0u8; 8];
        key.copy_from_slice(&digest[..8]);
        Lock {
            key: i64::from_be_bytes(key),
            shared,
        }
    }

    /// Whether holding `self` holds `other` too.
    fn covers(&self, other: &Lock) -> bool {
        self.key == other.key && (!self.shared || other.shared)
    }
}

/// The locks a hold takes, the widest first: every writer takes them in that order.
fn locks(hold: &Hold) -> Vec<Lock> {
    match hold {
        Hold::All => vec![Lock::new(false, &["all"])],
        Hold::Bookkeeping => vec![Lock::new(false, &["bookkeeping"])],
        Hold::Scope(scope) => vec![
            Lock::new(true, &["all"]),
            Lock::new(false, &["scope", &scope.account, &scope.region]),
        ],
        Hold::Cluster(scope, cluster) => vec![
            Lock::new(true, &["all"]),
            Lock::new(true, &["scope", &scope.account, &scope.region]),
            Lock::new(false, &["cluster", &scope.account, &scope.region, cluster]),
        ],
    }
}

/// A statement taking `locks`, each by `function` (`pg_advisory_xact_lock` or its `try` form)
/// or that function's shared form.
fn lock_statement(function: &str, locks: &[Lock]) -> String {
    let calls: Vec<String> = locks
        .iter()
        .map(|l| format!("{function}{}({})", if l.shared { "_shared" } else { "" }, l.key))
        .collect();
    format!("SELECT {}", calls.join(", "))
}

/// What a group owes before its next statement, sent with it in one round trip, in order: its
/// bookkeeping (the transaction, locks, savepoints) and writes nobody waits for.
enum Step {
    Batch(String),
    Write(tokio_postgres::Statement, Vec<Value>),
}

fn then(owed: &mut Vec<Step>, statement: &str) {
    owed.push(Step::Batch(statement.to_owned()));
}

/// Sends what is owed and then `next`, without waiting for one answer before sending what
/// follows: the driver sends a request when its future is first polled, and these are first
/// polled in order. The first failure of what was owed, and `next`'s outcome.
async fn after<C: GenericClient, T>(
    client: &C,
    owed: &[Step],
    next: impl std::future::Future<Output = T>,
) -> (Result<(), tokio_postgres::Error>, T) {
    let sends = owed.iter().map(|step| async move {
        match step {
            Step::Batch(sql) => client.batch_execute(sql).await,
            Step::Write(statement, values) => {
                let params: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
                client.execute(statement, &params).await.map(drop)
            }
        }
    });
    let (sent, next) = tokio::join!(futures_util::future::join_all(sends), next);
    (sent.into_iter().collect(), next)
}

/// Tries to take `locks` without waiting, after what is owed (in the same round trip).
fn try_locks(
    rt: &tokio::runtime::Runtime,
    client: &deadpool_postgres::Object,
    owed: Vec<Step>,
    locks: &[Lock],
) -> Result<bool, String> {
    let statement = lock_statement("pg_try_advisory_xact_lock", locks);
    let (before, tried) = rt.block_on(after(client, &owed, client.simple_query(&statement)));
    before.map_err(|e| causes(&e))?;
    let messages = tried.map_err(|e| causes(&e))?;
    Ok(messages.iter().all(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(row) => (0..row.len()).all(|i| row.get(i) == Some("t")),
        _ => true,
    }))
}

/// What a commit group read ahead for its writes ([`ReadAhead`]): each record's document, or
/// `None` where there was no such record. An entry goes when a write of the group changes its
/// record.
type AheadReads = std::collections::HashMap<ReadAhead, Option<String>>;

/// A read of many rows, by its statement and parameters (as `Debug` renders them).
type ReadKey = (String, Vec<String>);

/// What a commit group knows, under its locks, of what its writes read: records (read ahead,
/// read, or changed by one of them), and reads of many rows of one table each
/// ([`Sql::reads_of`]), which a change to that table makes it forget.
#[derive(Default)]
struct GroupReads {
    records: AheadReads,
    of_tables: std::collections::HashMap<ReadKey, (String, Vec<Row>)>,
}

impl GroupReads {
    fn clear(&mut self) {
        self.records.clear();
        self.of_tables.clear();
    }
}

/// What a write put into its group's [`GroupReads`], forgotten if the write is rolled back.
#[derive(Default)]
struct Remembered {
    records: Vec<ReadAhead>,
    of_tables: Vec<ReadKey>,
}

/// Reads what `reads` name, after what is owed, in one round trip.
fn read_ahead(
    rt: &tokio::runtime::Runtime,
    client: &deadpool_postgres::Object,
    owed: Vec<Step>,
    reads: Vec<ReadAhead>,
) -> Result<AheadReads, String> {
    let fetch = async {
        let mut prepared = Vec::with_capacity(reads.len());
        for read in &reads {
            prepared.push(client.prepare_cached(&read.statement).await?);
        }
        let runs = prepared.iter().zip(&reads).map(|(statement, read)| {
            let params: Vec<&(dyn ToSql + Sync)> = read.params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
            async move { client.query_opt(statement, &params).await }
        });
        futures_util::future::try_join_all(runs).await
    };
    let (before, found) = rt.block_on(after(client, &owed, fetch));
    before.map_err(|e| causes(&e))?;
    let found = found.map_err(|e| causes(&e))?;
    let mut out = AheadReads::with_capacity(reads.len());
    for (read, row) in reads.into_iter().zip(found) {
        let doc = row
            .map(|r| r.try_get::<_, String>(0))
            .transpose()
            .map_err(|e| causes(&e))?;
        out.insert(read, doc);
    }
    Ok(out)
}

/// Runs the writes at the front of `waiting` as one group and commits them, answering each
/// after the commit. A write whose closure fails is rolled back alone: what it had not sent is
/// dropped, and what it sent is undone by a savepoint taken before its first statement (a write
/// that sends nothing before it ends, its reads read ahead and its changes sent with what
/// follows, needs none). The group holds the locks of every write's hold until it commits.
fn commit_group(
    rt: &tokio::runtime::Runtime,
    client: &mut deadpool_postgres::Object,
    waiting: &mut std::collections::VecDeque<Job>,
    commits: &watch::Sender<u64>,
) {
    let started = std::time::Instant::now();
    // The bookkeeping travels with the statements: the transaction and the first write's locks
    // go out with the reads ahead or its first statement; a write's savepoint with its first
    // statement, and its ending with what comes next, or with the commit.
    let mut owed = vec![Step::Batch("BEGIN ISOLATION LEVEL READ COMMITTED".to_owned())];
    let mut held: Vec<Lock> = Vec::new();
    let mut answers = Vec::new();
    let mut events = Vec::new();
    let mut broken: Option<String> = None;
    // What the writes that share the first write's hold read. Those are the only writes it
    // serves: a write of another hold may change records its own way (a sweep).
    let mut known = GroupReads::default();
    let mut first_hold: Option<Hold> = None;
    while answers.len() < MAX_GROUP {
        let Some(next) = waiting.front() else { break };
        let need: Vec<Lock> = locks(&next.hold)
            .into_iter()
            .filter(|l| !held.iter().any(|h| h.covers(l)))
            .collect();
        if !need.is_empty() {
            if held.is_empty() {
                // Holding nothing, the group may wait for what it needs: no one waits for it.
                then(&mut owed, &lock_statement("pg_advisory_xact_lock", &need));
                // Then, under those locks and in the same round trip, what the writes of this
                // hold at the front of the queue will read.
                let mut reads: Vec<ReadAhead> = Vec::new();
                for job in waiting.iter().take(MAX_GROUP).take_while(|j| j.hold == next.hold) {
                    for read in &job.ahead {
                        if !reads.contains(read) {
                            reads.push(read.clone());
                        }
                    }
                }
                if !reads.is_empty() {
                    match read_ahead(rt, client, std::mem::take(&mut owed), reads) {
                        Ok(found) => known.records = found,
                        Err(why) => {
                            broken = Some(why);
                            break;
                        }
                    }
                }
            } else {
                // Holding something, it must not wait, or two groups could wait for each
                // other: if another holds what this write needs, the group ends before it, and
                // the write opens the next group.
                match try_locks(rt, client, std::mem::take(&mut owed), &need) {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(why) => {
                        broken = Some(why);
                        break;
                    }
                }
            }
            held.extend(need);
        }
        let Some(Job { hold, work, reply, .. }) = waiting.pop_front() else {
            break;
        };
        if *first_hold.get_or_insert_with(|| hold.clone()) != hold {
            known.clear();
        }
        let mut conn = Conn {
            client: &*client,
            rt,
            mine: owed.len(),
            owed: std::mem::take(&mut owed),
            failed: None,
            events: Some(Vec::new()),
            savepoint: false,
            known: Some(&mut known),
            remembered: Remembered::default(),
        };
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&mut conn)))
            .unwrap_or_else(|_| Err(StoreError::Worker("a write panicked".into())));
        if let Some(why) = conn.failed.take() {
            broken = Some(why);
            answers.push((reply, result));
            break;
        }
        // What the write did not send yet is still owed, with what came before it.
        owed = std::mem::take(&mut conn.owed);
        let (mine, savepoint) = (conn.mine, conn.savepoint);
        let (remembered, appended) = (std::mem::take(&mut conn.remembered), conn.events.take());
        drop(conn);
        let kept = matches!(result, Ok(Ok(_)));
        if kept {
            events.extend(appended.unwrap_or_default());
            if savepoint {
                then(&mut owed, "RELEASE SAVEPOINT ecsd_write");
            }
        } else {
            for key in &remembered.records {
                known.records.remove(key);
            }
            for key in &remembered.of_tables {
                known.of_tables.remove(key);
            }
            // Its own statements not yet sent are dropped; those sent are rolled back.
            owed.truncate(mine);
            if savepoint {
                then(
                    &mut owed,
                    "ROLLBACK TO SAVEPOINT ecsd_write; RELEASE SAVEPOINT ecsd_write",
                );
            }
        }
        answers.push((reply, result));
    }
    let committed = match broken {
        Some(why) => {
            let _ = rt.block_on(client.batch_execute("ROLLBACK"));
            Err(why)
        }
        None => rt.block_on(commit(client, owed, &events)).map_err(|e| causes(&e)),
    };
    super::settle(committed, started, answers, commits);
}

/// Numbers a group's events and inserts them, all in one statement. The counter's row stays
/// locked from here to the commit, so groups committing at once take their numbers in the order
/// they commit, and a reader that sees the counter at N sees every event up to N.
const NUMBER_EVENTS: &str = "WITH taken AS (
    UPDATE counters SET value = value + $1 WHERE name = 'event' RETURNING value - $1 AS base)
  INSERT INTO events (seq, account, region, cluster, detail_type, time, body, notice)
  SELECT taken.base + e.n, e.account, e.region, e.cluster, e.detail_type, e.time, e.body, e.notice
  FROM taken, unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::float8[], $7::text[], $8::text[])
    WITH ORDINALITY AS e(account, region, cluster, detail_type, time, body, notice, n)";

/// Ends a group: what is owed, its events, the commit, sent together in one round trip (the
/// server runs them in order; a commit after a failed statement only rolls back).
async fn commit(
    client: &deadpool_postgres::Object,
    owed: Vec<Step>,
    events: &[Event],
) -> Result<(), tokio_postgres::Error> {
    let number = match events.is_empty() {
        true => None,
        false => Some(client.prepare_cached(NUMBER_EVENTS).await?),
    };
    let column = |f: fn(&Event) -> &str| events.iter().map(f).collect::<Vec<_>>();
    let (accounts, regions, clusters) = (column(|e| &e.account), column(|e| &e.region), column(|e| &e.cluster));
    let (types, bodies) = (column(|e| &e.detail_type), column(|e| &e.body));
    let times: Vec<f64> = events.iter().map(|e| e.time).collect();
    let notices: Vec<Option<&str>> = events.iter().map(|e| e.notice.as_deref()).collect();
    let count = events.len() as i64;
    let numbered = async {
        match &number {
            Some(stmt) => {
                let params: [&(dyn ToSql + Sync); 8] = [
                    &count, &accounts, &regions, &clusters, &types, &times, &bodies, &notices,
                ];
                client.execute(stmt, &params).await.map(drop)
            }
            None => Ok(()),
        }
    };
    let ending = async { tokio::join!(numbered, client.batch_execute("COMMIT")) };
    let (owed, (numbered, committed)) = after(client, &owed, ending).await;
    owed.and(numbered).and(committed)
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
    fn run(&self, write: Option<Write>, f: SqlFn) -> BoxFuture<TxOutcome> {
        if let Some(write) = write {
            return self.submit(write, f);
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
                    owed: Vec::new(),
                    mine: 0,
                    failed: None,
                    events: None,
                    savepoint: false,
                    known: None,
                    remembered: Remembered::default(),
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
        drop(self.lanes.lock().map(|mut l| l.take()));
        let writers = self
            .writers
            .lock()
            .map(|mut w| std::mem::take(&mut *w))
            .unwrap_or_default();
        for writer in writers {
            let _ = writer.join();
        }
    }

    fn commits(&self) -> watch::Receiver<u64> {
        self.commits.subscribe()
    }
}

/// What runs a connection's futures to completion on a blocking thread: the request runtime's
/// handle (reads), or the writer's own runtime.
trait Drive {
    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output;
}

impl Drive for Handle {
    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        Handle::block_on(self, f)
    }
}

impl Drive for tokio::runtime::Runtime {
    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        tokio::runtime::Runtime::block_on(self, f)
    }
}

/// An open transaction (a read's, or the writer's session inside its group), driven from a
/// blocking thread.
struct Conn<'a, C: GenericClient, D: Drive> {
    client: &'a C,
    rt: &'a D,
    /// What is owed before the next statement, sent with it in one round trip.
    owed: Vec<Step>,
    /// Where this write's own part of `owed` begins.
    mine: usize,
    /// Why the owed statements failed: the group's transaction is lost.
    failed: Option<String>,
    /// The events a write appended, numbered when its group commits (a read has none).
    events: Option<Vec<Event>>,
    /// Whether this write took its savepoint (before the first statement it sent).
    savepoint: bool,
    /// What its group read ahead, and read for its earlier writes (a read has none).
    known: Option<&'a mut GroupReads>,
    /// What this write put into `known`.
    remembered: Remembered,
}

/// An event appended by a write of the group being committed.
struct Event {
    account: String,
    region: String,
    cluster: String,
    detail_type: String,
    time: f64,
    body: String,
    notice: Option<String>,
}

impl<C: GenericClient, D: Drive> Conn<'_, C, D> {
    /// Runs `f` on the connection, after what is owed, in the same round trip (the driver
    /// pipelines requests that are in flight together, and the server runs them in order).
    fn run<T>(&mut self, f: impl std::future::Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        // A write that sends a statement (or its own owed ones with it) can be undone alone
        // only from a savepoint taken before its first.
        if self.events.is_some() && !self.savepoint {
            self.owed
                .insert(self.mine, Step::Batch("SAVEPOINT ecsd_write".to_owned()));
            self.savepoint = true;
        }
        if self.owed.is_empty() {
            return self.rt.block_on(f);
        }
        let owed = std::mem::take(&mut self.owed);
        self.mine = 0;
        let (before, result) = self.rt.block_on(after(self.client, &owed, f));
        if let Err(e) = before {
            let why = causes(&e);
            self.failed = Some(why.clone());
            return Err(StoreError::Worker(why));
        }
        result
    }
}

/// A statement parameter kept until the statement is sent.
#[derive(Debug)]
enum Value {
    Null,
    Text(String),
    Int(i64),
    Real(f64),
    Bool(bool),
}

impl Value {
    fn of(param: &Param<'_>) -> Value {
        match *param {
            Param::Null => Value::Null,
            Param::Text(v) => Value::Text(v.to_owned()),
            Param::Int(v) => Value::Int(v),
            Param::Real(v) => Value::Real(v),
            Param::Bool(v) => Value::Bool(v),
        }
    }

    fn param(&self) -> Param<'_> {
        match self {
            Value::Null => Param::Null,
            Value::Text(v) => Param::Text(v),
            Value::Int(v) => Param::Int(*v),
            Value::Real(v) => Param::Real(*v),
            Value::Bool(v) => Param::Bool(*v),
        }
    }
}

impl ToSql for Value {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        self.param().to_sql(ty, out)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
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

/// The read ahead that `sql` with `params` would be, if its parameters are all text (as the
/// keys of what is read ahead are).
fn ahead_key(sql: &str, params: &[Param<'_>]) -> Option<ReadAhead> {
    let params = params
        .iter()
        .map(|p| match p {
            Param::Text(t) => Some((*t).to_owned()),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()?;
    Some(ReadAhead {
        statement: sql.to_owned(),
        params,
    })
}

/// Each statement prepared (from the cache when it can be), with its parameters as the driver
/// takes them: ready to be sent together.
async fn prepare_each<'p, C: GenericClient>(
    client: &C,
    statements: &'p [(&str, &[Param<'_>])],
) -> Result<Vec<(tokio_postgres::Statement, Vec<&'p (dyn ToSql + Sync)>)>, StoreError> {
    let mut prepared = Vec::with_capacity(statements.len());
    for (sql, params) in statements {
        let stmt = client.prepare_cached(&Dialect::Postgres.render(sql)).await?;
        prepared.push((stmt, params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()));
    }
    Ok(prepared)
}

impl<C: GenericClient, D: Drive> Sql for Conn<'_, C, D> {
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

    fn execute_later(&mut self, sql: &str, params: &[Param<'_>]) -> Result<(), StoreError> {
        // Only a write group carries what is owed to its next statement.
        if self.events.is_none() {
            return self.execute(sql, params).map(drop);
        }
        // Prepared now (no round trip once cached), so that sending it later waits for nothing.
        let client = self.client;
        let statement = self
            .rt
            .block_on(async { client.prepare_cached(&Dialect::Postgres.render(sql)).await })?;
        self.owed
            .push(Step::Write(statement, params.iter().map(Value::of).collect()));
        Ok(())
    }

    fn append_event(&mut self, event: &NewEvent<'_>) -> Result<(), StoreError> {
        let Some(events) = self.events.as_mut() else {
            return super::sql::append_now(self, event);
        };
        events.push(Event {
            account: event.account.to_owned(),
            region: event.region.to_owned(),
            cluster: event.cluster.to_owned(),
            detail_type: event.detail_type.to_owned(),
            time: event.time,
            body: event.body.to_owned(),
            notice: event.notice.map(str::to_owned),
        });
        Ok(())
    }

    fn read_records(&mut self, reads: &[(&str, &[Param<'_>])]) -> Result<Vec<Option<String>>, StoreError> {
        // A read transaction, or a write whose group reads nothing but by its statements.
        let Some(ahead) = self.known.as_deref().map(|k| &k.records) else {
            return self
                .query_each(reads)?
                .into_iter()
                .map(|rows| first_doc(&rows))
                .collect();
        };
        let keys: Vec<Option<ReadAhead>> = reads.iter().map(|(sql, params)| ahead_key(sql, params)).collect();
        let mut found: Vec<Option<Option<String>>> = keys
            .iter()
            .map(|key| key.as_ref().and_then(|k| ahead.get(k).cloned()))
            .collect();
        let missing: Vec<usize> = (0..reads.len()).filter(|&i| found[i].is_none()).collect();
        if missing.is_empty() {
            return Ok(found.into_iter().flatten().collect());
        }
        let asked: Vec<(&str, &[Param<'_>])> = missing.iter().map(|&i| reads[i]).collect();
        let rows = self.query_each(&asked)?;
        for (&i, rows) in missing.iter().zip(&rows) {
            let doc = first_doc(rows)?;
            // What a write read may rest on its own changes: it is kept for the group's later
            // writes only if the write is.
            if let (Some(key), Some(known)) = (keys[i].clone(), self.known.as_deref_mut()) {
                known.records.insert(key.clone(), doc.clone());
                self.remembered.records.push(key);
            }
            found[i] = Some(doc);
        }
        Ok(found.into_iter().flatten().collect())
    }

    fn holds(&mut self, table: &str, sql: &str, params: &[Param<'_>], doc: Option<&str>) {
        let Some(known) = self.known.as_deref_mut() else {
            return;
        };
        known.of_tables.retain(|_, (of, _)| of != table);
        // What a write changed stands for the group's later writes only if the write is kept.
        if let Some(key) = ahead_key(sql, params) {
            known.records.insert(key.clone(), doc.map(str::to_owned));
            self.remembered.records.push(key);
        }
    }

    fn reads_of(&mut self, reads: &[(&str, &str, &[Param<'_>])]) -> Result<Vec<Vec<Row>>, StoreError> {
        let Some(known) = self.known.as_deref() else {
            let statements: Vec<(&str, &[Param<'_>])> = reads.iter().map(|(_, sql, params)| (*sql, *params)).collect();
            return self.query_each(&statements);
        };
        let keys: Vec<ReadKey> = reads
            .iter()
            .map(|(_, sql, params)| ((*sql).to_owned(), params.iter().map(|p| format!("{p:?}")).collect()))
            .collect();
        let mut found: Vec<Option<Vec<Row>>> = keys
            .iter()
            .map(|key| known.of_tables.get(key).map(|(_, rows)| rows.clone()))
            .collect();
        let missing: Vec<usize> = (0..reads.len()).filter(|&i| found[i].is_none()).collect();
        if !missing.is_empty() {
            let asked: Vec<(&str, &[Param<'_>])> = missing.iter().map(|&i| (reads[i].1, reads[i].2)).collect();
            let answers = self.query_each(&asked)?;
            for (&i, rows) in missing.iter().zip(answers) {
                // Kept for the group's later writes only if this write is (what it read may
                // rest on its own changes).
                if let Some(known) = self.known.as_deref_mut() {
                    known
                        .of_tables
                        .insert(keys[i].clone(), (reads[i].0.to_owned(), rows.clone()));
                    self.remembered.of_tables.push(keys[i].clone());
                }
                found[i] = Some(rows);
            }
        }
        Ok(found.into_iter().flatten().collect())
    }

    fn query_each(&mut self, statements: &[(&str, &[Param<'_>])]) -> Result<Vec<Vec<Row>>, StoreError> {
        let client = self.client;
        self.run(async move {
            let prepared = prepare_each(client, statements).await?;
            // In flight together: one round trip for all of them.
            let runs = prepared.iter().map(|(stmt, params)| client.query(stmt, params));
            let answers = futures_util::future::try_join_all(runs).await?;
            answers.iter().map(|rows| rows.iter().map(cells).collect()).collect()
        })
    }

    fn execute_each(&mut self, statements: &[(&str, &[Param<'_>])]) -> Result<Vec<u64>, StoreError> {
        let client = self.client;
        self.run(async move {
            let prepared = prepare_each(client, statements).await?;
            // In flight together: one round trip for all of them.
            let runs = prepared.iter().map(|(stmt, params)| client.execute(stmt, params));
            Ok(futures_util::future::try_join_all(runs).await?)
        })
    }
}
