//! The HTTP server: opens the store, then serves the API on an already-bound listener until told
//! to stop, within connection, header, body and time limits; on stop it lets in-flight requests
//! finish and closes the store.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::auth::{Keys, Regions};
use crate::channels::{self, lease, Hub, Timings};
use crate::domain::now;
use crate::error::ApiError;
use crate::events_api;
use crate::store::Store;
use crate::store::{PostgresStore, SqliteStore, StoreError};
use crate::throttle::Throttle;
use crate::webhooks::{self, Webhook};
use crate::wire::{self, AppState};

/// The file the embedded store keeps its database in, inside the data directory.
pub const DATABASE_FILE: &str = "ecsd.sqlite3";

/// Limits that keep one client from holding the server.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// Largest request head (request line and headers) accepted.
    pub max_header_bytes: usize,
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// Time to send a request's headers, and the longest a connection may sit idle between
    /// requests.
    pub header_timeout: Duration,
    /// Time to send a request's body once its headers arrived (408 beyond).
    pub body_timeout: Duration,
    /// How long a stopping server waits for in-flight requests.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 1024 * 1024,
            max_header_bytes: 64 * 1024,
            max_connections: 4096,
            header_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// What `ecsd serve` runs with.
pub struct Options {
    /// Where the embedded store (and the simulated agents' identities) live.
    pub data_dir: PathBuf,
    /// A `postgres://` URL to share one PostgreSQL database with other ecsd processes instead
    /// of the embedded store.
    pub store_url: Option<String>,
    /// Regions served; requests signed for another are refused.
    pub regions: Regions,
    pub keys: Keys,
    pub throttle: Throttle,
    pub limits: Limits,
    /// The base URL agents are told to reach this server at (DiscoverPollEndpoint); by default
    /// `http://` and the address it listens on.
    pub advertise_url: Option<String>,
    pub retention: Retention,
    pub webhooks: Vec<Webhook>,
    /// Heartbeat, manifest and timeout periods of the agent channels (ACS, TCS).
    pub channels: Timings,
}

/// How long history is kept.
#[derive(Clone, Debug)]
pub struct Retention {
    /// Events older than this are removed.
    pub events: Duration,
    /// Tasks stay visible to DescribeTasks this long after they stop, as in ECS.
    pub stopped_tasks: Duration,
    /// How often the sweeper looks.
    pub sweep_every: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            events: Duration::from_secs(24 * 3600),
            stopped_tasks: Duration::from_secs(3600),
            sweep_every: Duration::from_secs(60),
        }
    }
}

impl Options {
    /// The development setup: the `test`/`test` principal in `account_id`, every region,
    /// default limits, no throttling.
    pub fn development(data_dir: PathBuf, account_id: &str) -> Options {
        Options {
            data_dir,
            store_url: None,
            regions: Regions::All,
            keys: Keys::development(account_id),
            throttle: Throttle::off(),
            limits: Limits::default(),
            advertise_url: None,
            retention: Retention::default(),
            webhooks: Vec::new(),
            channels: Timings::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// The routes: `POST /` for the API, `GET /health`, the event log, the agent channels, and a
/// JSON 404 for anything else.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", post(wire::handle))
        .route("/acs/ws", get(channels::acs::connect))
        .route("/tcs/ws", get(channels::tcs::connect))
        .route(
            "/health",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/events", get(events_api::page))
        .route("/events/stream", get(events_api::stream))
        .fallback(|| async {
            let err = ApiError::unknown_operation("Not found: ECS API calls are POST / with an X-Amz-Target header.");
            let mut response = wire::error_response(&uuid::Uuid::new_v4().to_string(), &err);
            *response.status_mut() = StatusCode::NOT_FOUND;
            response
        })
        .with_state(state)
}

/// A server whose store is open, ready to serve.
pub struct Server {
    store: Arc<dyn Store>,
    options: Options,
}

impl Server {
    /// Opens (creating and migrating if needed) the store: PostgreSQL if a URL is given, else
    /// the embedded store in the data directory.
    pub async fn open(options: Options) -> Result<Server, ServeError> {
        std::fs::create_dir_all(&options.data_dir).map_err(|source| ServeError::DataDir {
            path: options.data_dir.clone(),
            source,
        })?;
        let store: Arc<dyn Store> = match &options.store_url {
            Some(url) => Arc::new(PostgresStore::open(url).await?),
            None => {
                let path = options.data_dir.join(DATABASE_FILE);
                let store = tokio::task::spawn_blocking(move || SqliteStore::open(&path))
                    .await
                    .map_err(std::io::Error::other)??;
                Arc::new(store)
            }
        };
        Ok(Server { store, options })
    }

    /// Serves on `listener` until `shutdown` resolves, then lets in-flight requests finish
    /// (up to the drain timeout) and closes the store: everything acknowledged is committed.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let options = self.options;
        let advertise_url = match options.advertise_url {
            Some(url) => url,
            None => format!("http://{}", listener.local_addr()?),
        };
        let limits = options.limits.clone();
        let (stopping, stopped) = watch::channel(false);
        let store = self.store.clone();
        let mut background = vec![tokio::spawn(sweep(
            store.clone(),
            options.retention.clone(),
            stopped.clone(),
        ))];
        for hook in options.webhooks {
            background.push(tokio::spawn(webhooks::deliver(store.clone(), hook, stopped.clone())));
        }
        let hub = Arc::new(Hub::default());
        background.push(tokio::spawn(hub.clone().follow(store.clone(), stopped.clone())));
        // Held before the first agent connects, so that no other process takes its connections
        // for lapsed.
        lease::renew(store.as_ref(), &hub, &options.channels).await;
        background.push(tokio::spawn(lease::keep(
            store.clone(),
            hub.clone(),
            options.channels,
            stopped.clone(),
        )));
        let app = router(Arc::new(AppState {
            store,
            keys: options.keys,
            regions: options.regions,
            throttle: options.throttle,
            limits: options.limits,
            advertise_url: advertise_url.into(),
            shutdown: stopped,
            channels: hub.clone(),
            timings: options.channels,
        }));
        let connections = Arc::new(Semaphore::new(limits.max_connections));
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .max_buf_size(limits.max_header_bytes.max(8192))
            .keep_alive(true);
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                permit = connections.clone().acquire_owned() => permit.map_err(std::io::Error::other)?,
                () = &mut shutdown => break,
            };
            let (stream, _) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: back off rather than spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            let service = TowerToHyperService::new(app.clone());
            // With upgrades: the agent channels are websockets.
            let connection = http.serve_connection(TokioIo::new(stream), service).with_upgrades();
            let mut stopped = stopping.subscribe();
            tokio::spawn(async move {
                tokio::pin!(connection);
                let ended = tokio::select! {
                    ended = connection.as_mut() => ended,
                    _ = stopped.changed() => {
                        // Finish the request in flight, then close.
                        connection.as_mut().graceful_shutdown();
                        connection.await
                    }
                };
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "connection ended");
                }
                drop(permit);
            });
        }
        drop(listener);
        let _ = stopping.send(true);
        for task in background {
            let _ = task.await;
        }
        // Every connection holds a permit until it ends; agent channels end on their own and
        // record their agents as disconnected before the store closes.
        let drained = async {
            let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
            let _ = connections.acquire_many(all).await;
            while hub.live() > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        if tokio::time::timeout(limits.drain_timeout, drained).await.is_err() {
            tracing::warn!("in-flight requests did not finish within the drain timeout");
        }
        // Every session has recorded its end; one that did not in time is released by the next
        // process that looks for lapsed leases.
        if let Err(e) = self.store.end_lease(hub.process().to_owned()).await {
            tracing::warn!(error = %e, "cannot end the lease on this process's agent connections");
        }
        let store = self.store;
        tokio::task::spawn_blocking(move || store.close())
            .await
            .map_err(std::io::Error::other)?;
        Ok(())
    }
}

/// Removes what retention no longer keeps, every `sweep_every`, until the server stops.
async fn sweep(store: Arc<dyn Store>, retention: Retention, mut stopped: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(retention.sweep_every) => {}
            _ = stopped.changed() => return,
        }
        let now = now();
        let events_before = now - retention.events.as_secs_f64();
        let tasks_before = now - retention.stopped_tasks.as_secs_f64();
        match store.sweep(events_before, tasks_before).await {
            Ok(swept) if swept.events + swept.tasks > 0 => {
                tracing::info!(events = swept.events, tasks = swept.tasks, "swept expired history");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "sweep failed"),
        }
    }
}
