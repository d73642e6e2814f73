//! The shared store: PostgreSQL, for several ecsd processes behind one load balancer.
//!
//! Write transactions run at READ COMMITTED and first take one transaction-scoped advisory
//! lock, so writers from every process run one at a time: no lost update, no overcommitted
//! instance, and event sequence numbers that are committed in order (a reader can never see
//! event N+1 before event N). Reads run as REPEATABLE READ, READ ONLY snapshots and are not
//! serialized. Nothing is needed from the database beyond a plain schema: no extension, no
//! special isolation level. Handlers' closures are synchronous; they run on the blocking pool
//! and drive the async driver there.

use std::time::Duration;

use bytes::BytesMut;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
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
/// How often a process looks for events committed by other processes.
const EVENT_POLL: Duration = Duration::from_millis(200);

pub struct PostgresStore {
    pool: Pool,
    commits: watch::Sender<u64>,
    poller: tokio::task::JoinHandle<()>,
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
        let commits = self.commits.clone();
        self.blocking(move |rt, mut client| {
            let started = std::time::Instant::now();
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
                let mut conn = Conn { tx: &tx, rt };
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || f(&mut conn)))
                    .map_err(|_| StoreError::Worker("a transaction panicked".into()))?
            };
            match result {
                Ok(Ok(value)) => {
                    rt.block_on(tx.commit())?;
                    if write {
                        metrics::histogram!(crate::monitoring::COMMIT_SECONDS).record(started.elapsed().as_secs_f64());
                        metrics::histogram!(crate::monitoring::COMMIT_GROUP).record(1.0);
                        commits.send_modify(|n| *n += 1);
                    }
                    Ok(Ok(value))
                }
                other => {
                    rt.block_on(tx.rollback())?;
                    other
                }
            }
        })
    }

    fn commits(&self) -> watch::Receiver<u64> {
        self.commits.subscribe()
    }
}

/// An open transaction, driven from a blocking thread.
struct Conn<'a> {
    tx: &'a deadpool_postgres::Transaction<'a>,
    rt: &'a Handle,
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

impl Sql for Conn<'_> {
    fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, StoreError> {
        self.rt.block_on(async {
            let stmt = self.tx.prepare_cached(&Dialect::Postgres.render(sql)).await?;
            let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
            self.tx.query(&stmt, &params).await?.iter().map(cells).collect()
        })
    }

    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, StoreError> {
        self.rt.block_on(async {
            let stmt = self.tx.prepare_cached(&Dialect::Postgres.render(sql)).await?;
            let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
            Ok(self.tx.execute(&stmt, &params).await?)
        })
    }
}
