//! The embedded store: one SQLite database file in WAL mode.
//!
//! All writes go through one writer thread that groups whatever is queued into a single
//! transaction (each request in its own savepoint, so one request's abort does not undo
//! another's) and commits with `synchronous=FULL`: one fsync covers the whole group, and no
//! request is answered before the group is on disk. The writer numbers events as it runs them,
//! so in commit order, and stores the counter once per group. Reads run on a pool of
//! connections kept to reading (`query_only`) and see the last committed state: short ones on
//! the thread that asked, scans of many rows (the event log) on the blocking thread pool. A
//! checkpointer thread beside the writer copies committed pages from the WAL into the database
//! file.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rusqlite::config::DbConfig;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use tokio::sync::{oneshot, watch, Semaphore};

use super::schema::MIGRATIONS;
use super::sql::{Cell, Dialect, NewEvent, Param, Row, Sql};
use super::{Backend, BoxFuture, SqlFn, StoreError, TxOutcome, Write};

/// Requests committed together at most; bounds the latency one group adds to its first request.
const MAX_GROUP: usize = 512;
/// Reads running at once (each with its own connection); more wait their turn, so a burst of
/// readers costs neither threads nor memory beyond this.
const MAX_READERS: usize = 8;

type Reply = oneshot::Sender<TxOutcome>;

struct Job {
    work: SqlFn,
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

/// Prepared statements a connection keeps. rusqlite's default, 16, is fewer than the distinct
/// statements the requests and the scheduler run, so a busy connection would keep parsing them
/// again.
const STATEMENTS_KEPT: usize = 256;

/// Opens a connection to the database file, as every connection of the store is opened.
///
/// Through SQLite's `unix-excl` file system layer: the first connection takes an exclusive lock
/// on the file for the process, so another process cannot open the store beside this one (its
/// single writer numbers events in commit order), and the connections of this process
/// coordinate in memory: the WAL's index lives in the heap, and beginning a read costs no
/// system call (with the default layer every read transaction locks and unlocks a slot of the
/// shared-memory index file with `fcntl`).
fn connect(path: &Path, flags: OpenFlags) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags_and_vfs(path, flags, c"unix-excl")?;
    configure(&conn)?;
    Ok(conn)
}

/// What every connection is opened with. The query planner's stability guarantee makes a plan
/// independent of the values bound: without it SQLite prepares a statement again whenever a
/// value it planned with (a `LIMIT $n`, a LIKE pattern) is bound anew, which every page and
/// every follower's read of the events would pay.
fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.set_prepared_statement_cache_capacity(STATEMENTS_KEPT);
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(())
}

impl SqliteStore {
    /// Opens (creating and migrating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut conn = connect(path, OpenFlags::default())?;
        // The first statement takes the file's lock (see `connect`): still busy after the
        // connection's wait, it is another process's.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| match e.sqlite_error_code() {
                Some(rusqlite::ErrorCode::DatabaseBusy) => StoreError::InUse(path.display().to_string()),
                _ => e.into(),
            })?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        migrate(&mut conn)?;
        let (tx, rx) = mpsc::channel();
        let (commits_tx, commits) = watch::channel(0);
        let checkpointed = path.to_owned();
        let writer = std::thread::Builder::new()
            .name("ecsd-sqlite-writer".into())
            .spawn(move || write_loop(conn, checkpointed, rx, commits_tx))
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

    /// Runs `f` in a read transaction on a connection of the pool.
    fn read(path: &Path, pool: &Mutex<Vec<Connection>>, f: SqlFn) -> TxOutcome {
        let conn = Self::read_connection(path, pool)?;
        let outcome = (|| {
            // Through cached statements: parsed once per connection, not once per read. A read
            // changed nothing, so it ends with a rollback.
            conn.prepare_cached("BEGIN")?.execute([])?;
            let result = catch_unwind(AssertUnwindSafe(|| {
                f(&mut Conn {
                    conn: &conn,
                    events: None,
                })
            }));
            conn.prepare_cached("ROLLBACK")?.execute([])?;
            result.map_err(|_| StoreError::Worker("a read panicked".into()))?
        })();
        // A connection left inside a transaction (its end failed) is not used again.
        if conn.is_autocommit() {
            if let Ok(mut idle) = pool.lock() {
                idle.push(conn);
            }
        }
        outcome
    }

    fn read_connection(path: &Path, pool: &Mutex<Vec<Connection>>) -> Result<Connection, StoreError> {
        if let Some(conn) = pool.lock().ok().and_then(|mut p| p.pop()) {
            return Ok(conn);
        }
        // Opened for writing as the `unix-excl` layer wants of every connection that shares its
        // in-memory locks (a read-only one would lock the file itself), and kept to reading.
        let conn = connect(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.pragma_update(None, "query_only", true)?;
        Ok(conn)
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Backend for SqliteStore {
    fn run(&self, write: Option<Write>, f: SqlFn) -> BoxFuture<TxOutcome> {
        // One writer commits at a time: every hold is held. Reads of the embedded file cost no
        // round trip, so what a write will read is read when it asks.
        if write.is_some() {
            return self.submit(f);
        }
        // A short read costs less than handing it to another thread and back (two wake-ups,
        // two context switches): it runs here, on the thread that serves the request.
        let (path, pool, reading) = (self.path.clone(), self.readers.clone(), self.reading.clone());
        Box::pin(async move {
            let _turn = reading.acquire_owned().await.map_err(|_| StoreError::Closed)?;
            Self::read(&path, &pool, f)
        })
    }

    fn scan(&self, f: SqlFn) -> BoxFuture<TxOutcome> {
        let (path, pool, reading) = (self.path.clone(), self.readers.clone(), self.reading.clone());
        Box::pin(async move {
            let _turn = reading.acquire_owned().await.map_err(|_| StoreError::Closed)?;
            tokio::task::spawn_blocking(move || Self::read(&path, &pool, f))
                .await
                .map_err(|e| StoreError::Worker(e.to_string()))?
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
    /// Queues `work` for the writer's next commit group.
    fn submit(&self, work: SqlFn) -> BoxFuture<TxOutcome> {
        let (reply, answer) = oneshot::channel();
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
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let applied: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if applied >= MIGRATIONS.len() {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
    for step in &MIGRATIONS[applied..] {
        tx.execute_batch(step.text(Dialect::Sqlite))?;
    }
    tx.pragma_update(None, "user_version", MIGRATIONS.len())?;
    tx.commit()?;
    tracing::info!(from = applied, to = MIGRATIONS.len(), "migrated the store schema");
    Ok(())
}

fn write_loop(conn: Connection, path: PathBuf, jobs: mpsc::Receiver<Job>, commits: watch::Sender<u64>) {
    let (kick, kicked) = mpsc::sync_channel(1);
    let checkpointer = std::thread::Builder::new()
        .name("ecsd-sqlite-checkpointer".into())
        .spawn(move || checkpoint_loop(&path, kicked));
    let mut numbered = None;
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        commit_group(&conn, group, &mut numbered, &commits);
        let _ = kick.try_send(());
    }
    drop(kick);
    if let Ok(checkpointer) = checkpointer {
        let _ = checkpointer.join();
    }
}

/// How long the checkpointer lets commits gather before copying them.
const CHECKPOINT_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);

/// Copies committed pages from the WAL into the database file on a thread of its own, soon
/// after commits, so that the checkpoint SQLite runs in the committing writer (once the log
/// holds 1,000 pages) finds them copied already and has little to do before the log restarts.
fn checkpoint_loop(path: &Path, kicked: mpsc::Receiver<()>) {
    let conn = match connect(path, OpenFlags::default()) {
        Ok(conn) => conn,
        Err(e) => {
            tracing::warn!(error = %e, "no checkpoints beside the writer");
            return;
        }
    };
    while kicked.recv().is_ok() {
        std::thread::sleep(CHECKPOINT_PAUSE);
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "checkpoint failed");
        }
    }
}

/// Runs one of the writer's own statements. They go through the statement cache like every
/// other: rusqlite's transaction and savepoint types parse theirs on every use, and a savepoint
/// is taken and released for every request.
fn run(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

/// Runs a group in one transaction and commits it. `numbered` is the writer's count of events,
/// read from the database when it is not known (at the start, and after a group that did not
/// commit): this process is the store's only writer, so the count it keeps is the database's.
fn commit_group(conn: &Connection, group: Vec<Job>, known: &mut Option<Numbered>, commits: &watch::Sender<u64>) {
    let begun = run(conn, "BEGIN IMMEDIATE").and_then(|()| match known.take() {
        Some(numbered) => Ok(numbered),
        None => last_event(conn).map(|last| Numbered { stored: last, last }),
    });
    let mut numbered = match begun {
        Ok(numbered) => numbered,
        Err(e) => {
            if !conn.is_autocommit() {
                let _ = run(conn, "ROLLBACK");
            }
            let message = e.to_string();
            for job in group {
                let _ = job.reply.send(Err(StoreError::Worker(message.clone())));
            }
            return;
        }
    };
    let started = std::time::Instant::now();
    let mut answers = Vec::with_capacity(group.len());
    let mut broken = None;
    for Job { work, reply } in group {
        // Once a savepoint could not be handled, what the group holds is unknown: nothing more
        // runs, and the whole group is rolled back and answered with the failure.
        let outcome = match &broken {
            None => request(conn, &mut numbered, work).unwrap_or_else(|e| {
                broken = Some(e.to_string());
                Err(StoreError::Closed)
            }),
            Some(_) => Err(StoreError::Closed),
        };
        answers.push((reply, outcome));
    }
    let committed = match broken {
        None => numbered
            .store(conn)
            .and_then(|()| run(conn, "COMMIT"))
            .map_err(|e| e.to_string()),
        Some(message) => Err(message),
    };
    if committed.is_err() && !conn.is_autocommit() {
        if let Err(e) = run(conn, "ROLLBACK") {
            tracing::error!(error = %e, "a failed commit group could not be rolled back");
        }
    }
    if committed.is_ok() {
        numbered.stored = numbered.last;
        *known = Some(numbered);
    }
    super::settle(committed, started, answers, commits);
}

/// The number of the last event the writer gave out, kept in memory and stored once per group,
/// before its commit: numbering an event then costs no statement of its own, and the counter's
/// page is written once per group.
struct Numbered {
    /// As the database holds it (at the group's start).
    stored: i64,
    last: i64,
}

impl Numbered {
    fn store(&self, conn: &Connection) -> rusqlite::Result<()> {
        if self.last != self.stored {
            conn.prepare_cached("UPDATE counters SET value = ?1 WHERE name = 'event'")?
                .execute([self.last])?;
        }
        Ok(())
    }
}

/// The number of the last event given out, as the database holds it.
fn last_event(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT value FROM counters WHERE name = 'event'")?
        .query_row([], |row| row.get(0))
}

/// Runs one request's work in a savepoint of the group's transaction, so that its failure
/// undoes only its own writes (and gives back the event numbers it took). An error here is the
/// savepoint's own, not the work's.
fn request(conn: &Connection, numbered: &mut Numbered, work: SqlFn) -> rusqlite::Result<TxOutcome> {
    run(conn, "SAVEPOINT request")?;
    let before = numbered.last;
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        work(&mut Conn {
            conn,
            events: Some(&mut numbered.last),
        })
    }))
    .unwrap_or_else(|_| Err(StoreError::Worker("a write panicked".into())));
    if !matches!(outcome, Ok(Ok(_))) {
        run(conn, "ROLLBACK TO request")?;
        numbered.last = before;
    }
    run(conn, "RELEASE request")?;
    Ok(outcome)
}

/// An open transaction (or savepoint) on one connection; in the writer's, with the number of
/// the last event its group gave out.
struct Conn<'c> {
    conn: &'c Connection,
    events: Option<&'c mut i64>,
}

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match *self {
            Param::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Param::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Param::Int(v) => ToSqlOutput::Owned(v.into()),
            Param::Real(v) => ToSqlOutput::Owned(v.into()),
            Param::Bool(v) => ToSqlOutput::Owned(i64::from(v).into()),
        })
    }
}

fn cell(value: ValueRef<'_>) -> Result<Cell, StoreError> {
    Ok(match value {
        ValueRef::Null => Cell::Null,
        ValueRef::Integer(v) => Cell::Int(v),
        ValueRef::Real(v) => Cell::Real(v),
        ValueRef::Text(t) => Cell::Text(
            String::from_utf8(t.to_vec()).map_err(|e| StoreError::Worker(format!("stored text is not UTF-8: {e}")))?,
        ),
        ValueRef::Blob(_) => return Err(StoreError::Worker("a query returned a blob".into())),
    })
}

impl Sql for Conn<'_> {
    fn append_event(&mut self, event: &NewEvent<'_>) -> Result<(), StoreError> {
        // One writer commits at a time: numbers taken now are taken in commit order.
        let last = self
            .events
            .as_deref_mut()
            .ok_or_else(|| StoreError::Worker("an event was appended outside the writer".into()))?;
        let seq = *last + 1;
        self.conn
            .prepare_cached(
                "INSERT INTO events (seq, account, region, cluster, detail_type, time, body, notice)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(rusqlite::params![
                seq,
                event.account,
                event.region,
                event.cluster,
                event.detail_type,
                event.time,
                event.body,
                event.notice
            ])?;
        *last = seq;
        Ok(())
    }

    fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&Dialect::Sqlite.render(sql))?;
        let columns = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let cells = (0..columns)
                .map(|i| cell(row.get_ref(i)?))
                .collect::<Result<Vec<_>, StoreError>>()?;
            out.push(Row(cells));
        }
        Ok(out)
    }

    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, StoreError> {
        let mut stmt = self.conn.prepare_cached(&Dialect::Sqlite.render(sql))?;
        Ok(stmt.execute(rusqlite::params_from_iter(params))? as u64)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use crate::domain::Scope;
    use crate::store::{SqliteStore, Store, StoreError, StoreExt};

    #[tokio::test]
    async fn a_commit_reaches_the_database_file_long_before_the_log_is_full() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("ecsd.db");
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).expect("opens"));
        let marker = "copied-from-the-log-into-the-database-file";
        let body = format!("{{\"marker\":\"{marker}\"}}");
        store
            .write(&Scope::new("a", "r"), move |tx| {
                tx.append_event("c", "d", 1.0, &body, None)
            })
            .await
            .map_err(|e: StoreError| e)
            .expect("appends");
        // One small commit is far from the 1,000 pages of log at which the writer itself would
        // copy it; only the checkpointer puts it in the database file while the store is open.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let file = std::fs::read(&path).expect("reads the database file");
            if file.windows(marker.len()).any(|w| w == marker.as_bytes()) {
                break;
            }
            assert!(Instant::now() < deadline, "the commit is still only in the log");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
