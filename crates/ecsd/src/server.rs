//! The HTTP server: opens the store, then serves the API on an already-bound listener until told
//! to stop, within connection, header, body and time limits, with its background work beside
//! (the service scheduler, the capacity ecsd provides for Fargate tasks and capacity providers,
//! the sweeper, webhook delivery, agent leases); on stop it lets in-flight requests finish and
//! closes the store.

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

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use hyper::body::Incoming;

use crate::auth::{Keys, Regions};
use crate::channels;
use crate::connections::{Busy, Connection, Connections, Refusal};
use crate::domain::{now, Scope};
use crate::error::{ApiError, ErrorCode};
use crate::events_api;
pub use crate::ops::fargate::{FargateCapacity, Range, POOL_CLUSTER};
pub use crate::ops::scaling::ScalingTimings;
use crate::sessions::{lease, Hub, Timings};
use crate::state::AppState;
pub use crate::state::Limits;
use crate::store::Store;
use crate::store::{PostgresStore, Scheduled, SqliteStore, StoreError};
use crate::throttle::Throttle;
use crate::webhooks::{self, Webhook};
use crate::wire;

/// The file the embedded store keeps its database in, inside the data directory.
pub const DATABASE_FILE: &str = "ecsd.sqlite3";

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
    /// The address ranges of the subnets Fargate tasks run in, and where their containers run.
    pub fargate: FargateCapacity,
    /// How long managed scaling of capacity providers waits.
    pub scaling: ScalingTimings,
    /// How long a web console session lasts.
    pub console_session: Duration,
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
            fargate: FargateCapacity::default(),
            scaling: ScalingTimings::default(),
            console_session: crate::console::DEFAULT_LIFETIME,
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

/// The routes: `POST /` for the API, `GET /health`, the event log, the agent channels, the
/// web console under `/console`, and a JSON 404 for anything else.
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
        .route("/metrics", get(crate::monitoring::scrape))
        .merge(crate::console::routes())
        .fallback(|| async {
            let err = ApiError::from(wire::RouteError::NotTheApi);
            let mut response = wire::error_response(&uuid::Uuid::new_v4().to_string(), &err);
            *response.status_mut() = StatusCode::NOT_FOUND;
            response
        })
        .with_state(state)
}

/// The scheduler's safety net: a pass this often even when nothing is committed.
const SCHEDULE_EVERY: Duration = Duration::from_secs(1);
/// The least time between two scheduler passes.
const SCHEDULE_SPACING: Duration = Duration::from_millis(100);

/// A server whose store is open, ready to serve.
pub struct Server {
    store: Arc<dyn Store>,
    options: Options,
}

impl Server {
    /// Opens (creating and migrating if needed) the store: PostgreSQL if a URL is given, else
    /// the embedded store in the data directory.
    pub async fn open(options: Options) -> Result<Server, ServeError> {
        crate::monitoring::handle();
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
        background.push(tokio::spawn(schedule(store.clone(), stopped.clone())));
        background.push(tokio::spawn(host(
            store.clone(),
            options.fargate.clone(),
            options.scaling,
            stopped.clone(),
        )));
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
            console_session: options.console_session,
        }));
        let connections = Connections::new(limits.max_connections, limits.max_connections_per_client);
        let overflow = Arc::new(Semaphore::new(MAX_OVERFLOW));
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            // hyper's own cap sits above the head limit, which `serve_request` applies exactly.
            .max_buf_size(limits.max_header_bytes.max(8192) * 2)
            .keep_alive(true);
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
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
            tracing::debug!(%peer, "connection accepted");
            let admitted = match connections.admit(peer.ip()) {
                Ok(admitted) => admitted,
                Err(refusal) => {
                    // Busy everywhere: a quick 503 that clients retry, rather than silence.
                    if let Ok(permit) = overflow.clone().try_acquire_owned() {
                        tokio::spawn(unavailable(stream, refusal, permit));
                    }
                    continue;
                }
            };
            let service = RequestService {
                peer,
                app: TowerToHyperService::new(app.clone()),
                connections: connections.clone(),
                connection: admitted.connection.clone(),
                limits: limits.clone(),
            };
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
                    _ = admitted.connection.shed.notified() => {
                        connection.as_mut().graceful_shutdown();
                        connection.await
                    }
                };
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "connection ended");
                }
                drop(admitted);
            });
        }
        drop(listener);
        let _ = stopping.send(true);
        for task in background {
            let _ = task.await;
        }
        // Agent channels end on their own and record their agents as disconnected before the
        // store closes.
        let drained = async {
            connections.drained().await;
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

/// Connections answered 503 at once; past this many, a new connection is closed unanswered.
const MAX_OVERFLOW: usize = 256;

/// Answers a connection that cannot be served now with a 503, then closes it.
async fn unavailable(stream: tokio::net::TcpStream, refusal: Refusal, _permit: tokio::sync::OwnedSemaphorePermit) {
    let message = match refusal {
        Refusal::Full => "The server is serving as many connections as it can; retry shortly.",
        Refusal::ClientFull => "This client address holds as many connections as it may; retry shortly.",
    };
    let service = hyper::service::service_fn(move |_request: Request<Incoming>| async move {
        let err = ApiError::new(ErrorCode::ServiceUnavailableException, message);
        let mut response = wire::error_response(&uuid::Uuid::new_v4().to_string(), &err);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        Ok::<_, std::convert::Infallible>(response)
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(2))
        .keep_alive(false);
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        http.serve_connection(TokioIo::new(stream), service),
    )
    .await;
}

/// Serves one connection's requests: applies the head and declared-body limits before the
/// router sees a request, and counts the connection busy until each response is sent.
#[derive(Clone)]
struct RequestService {
    /// The client's address, for handlers that trust loopback callers (`/metrics`).
    peer: std::net::SocketAddr,
    app: TowerToHyperService<Router>,
    connections: Arc<Connections>,
    connection: Arc<Connection>,
    limits: Limits,
}

impl hyper::service::Service<Request<Incoming>> for RequestService {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Response, Self::Error>> + Send>>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(self.peer);
        let busy = self.connection.busy(&self.connections);
        let limits = self.limits.clone();
        let app = self.app.clone();
        Box::pin(async move {
            let response = match refuse_early(&request, &limits) {
                Some(refusal) => {
                    // The client may still be sending a body it declared: read and drop it (within
                    // the body limits) so that it gets to read this answer.
                    tokio::spawn(wire::discard_body(request.into_body(), limits));
                    refusal
                }
                None => match app.call(request).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                },
            };
            // A streamed body (an event stream) keeps its connection busy until it ends; a body of
            // known size is written at once, and even a connection shed meanwhile finishes it.
            if hyper::body::Body::size_hint(response.body()).exact().is_some() {
                return Ok(response);
            }
            Ok(response.map(|body| Body::new(Held { body, _busy: busy })))
        })
    }
}

/// A streamed response body that keeps its connection counted busy until it is sent or dropped.
struct Held {
    body: Body,
    _busy: Busy,
}

impl hyper::body::Body for Held {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// The answer to a request refused on its head alone: a head over the limit (431), or a body
/// declared larger than the limit (413).
fn refuse_early(request: &Request<Incoming>, limits: &Limits) -> Option<Response> {
    let request_id = || uuid::Uuid::new_v4().to_string();
    if head_size(request) > limits.max_header_bytes {
        let err = ApiError::new(
            ErrorCode::RequestHeaderFieldsTooLargeException,
            format!(
                "The request line and headers are larger than {} bytes.",
                limits.max_header_bytes
            ),
        );
        let mut response = wire::error_response(&request_id(), &err);
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return Some(response);
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body_bytes as u64) {
        let mut response = wire::error_response(&request_id(), &wire::body_too_large(limits));
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return Some(response);
    }
    None
}

/// The size of a request's head as it came on the wire: request line, headers, blank line.
fn head_size(request: &Request<Incoming>) -> usize {
    let uri = request.uri();
    let target = match (uri.scheme_str(), uri.authority()) {
        // The absolute form a proxy would send: scheme://authority/path?query.
        (Some(scheme), Some(authority)) => scheme.len() + "://".len() + authority.as_str().len(),
        _ => 0,
    } + uri.path_and_query().map_or(1, |p| p.as_str().len());
    let line = request.method().as_str().len() + " ".len() + target + " HTTP/1.1\r\n".len();
    let headers: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + ": ".len() + value.len() + "\r\n".len())
        .sum();
    line + headers + "\r\n".len()
}

/// The service scheduler: a pass over every service not yet INACTIVE whenever something is
/// committed (a task moved, a service changed), at most every [`SCHEDULE_SPACING`], and every
/// [`SCHEDULE_EVERY`] regardless. Each pass over a service is one write transaction, so every
/// process sharing a store can run this: their passes are serialized by the store.
async fn schedule(store: Arc<dyn Store>, mut stopped: watch::Receiver<bool>) {
    let mut commits = store.commits();
    loop {
        tokio::select! {
            _ = commits.changed() => {}
            _ = tokio::time::sleep(SCHEDULE_EVERY) => {}
            _ = stopped.changed() => return,
        }
        commits.borrow_and_update();
        let services = store.scheduled_services().await;
        each(&store, "service", services, None::<Check>, |tx, due| {
            crate::ops::services::reconcile(tx, &due.cluster, &due.name)
        })
        .await;
        tokio::time::sleep(SCHEDULE_SPACING).await;
    }
}

/// A look, in a read transaction, at whether a background pass has anything to do.
type Check = fn(&mut crate::store::Tx<'_>, &Scheduled) -> Result<bool, crate::error::ApiError>;

/// Runs `pass` over each of `due` (as listed), each in a write transaction of its own; with a
/// `check`, only over those it finds something to do for (one read transaction per account and
/// region looks at them all).
async fn each<C, F>(
    store: &Arc<dyn Store>,
    kind: &'static str,
    due: Result<Vec<Scheduled>, StoreError>,
    check: Option<C>,
    pass: F,
) where
    C: Fn(&mut crate::store::Tx<'_>, &Scheduled) -> Result<bool, crate::error::ApiError> + Clone + Send + 'static,
    F: Fn(&mut crate::store::Tx<'_>, &Scheduled) -> Result<bool, crate::error::ApiError> + Clone + Send + 'static,
{
    use crate::store::StoreExt;
    let due = match due {
        Ok(due) => due,
        Err(e) => {
            tracing::warn!(kind, error = %e, "background work cannot list what is due");
            return;
        }
    };
    let due = match check {
        None => due,
        // One read per account and region looks at all of its items.
        Some(check) => {
            let mut scopes: Vec<(Scope, Vec<Scheduled>)> = Vec::new();
            for item in due {
                match scopes.iter_mut().find(|(s, _)| *s == item.scope) {
                    Some((_, items)) => items.push(item),
                    None => scopes.push((item.scope.clone(), vec![item])),
                }
            }
            let mut kept = Vec::new();
            for (scope, items) in scopes {
                let check = check.clone();
                let looked = store
                    .scan(&scope, move |tx| {
                        let mut kept = Vec::new();
                        for item in items {
                            match check(tx, &item) {
                                Ok(true) => kept.push(item),
                                Ok(false) => {}
                                Err(e) => {
                                    tracing::warn!(kind, name = %item.name, error = %e, "a background check failed")
                                }
                            }
                        }
                        Ok::<_, crate::error::ApiError>(kept)
                    })
                    .await;
                match looked {
                    Ok(items) => kept.extend(items),
                    Err(e) => tracing::warn!(kind, error = %e, "a background check failed"),
                }
            }
            kept
        }
    };
    for item in due {
        let (scope, name) = (item.scope.clone(), item.name.clone());
        let pass = pass.clone();
        if let Err(e) = store.write(&scope, move |tx| pass(tx, &item)).await {
            tracing::warn!(kind, name = %name, error = %e, "a background pass failed");
        }
    }
}

/// How often the tasks ecsd runs itself move on a step.
const HOST_EVERY: Duration = Duration::from_millis(250);

/// Runs the capacity ecsd provides: every [`HOST_EVERY`], each capacity provider of an Auto
/// Scaling group makes a pass (placing what waits for capacity, running its instances' tasks,
/// scaling) and each Fargate task moves on one step of its lifecycle, each in a write
/// transaction of its own, so that every process sharing a store can run this too.
async fn host(
    store: Arc<dyn Store>,
    subnets: FargateCapacity,
    timings: ScalingTimings,
    mut stopped: watch::Receiver<bool>,
) {
    let subnets = Arc::new(subnets);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(HOST_EVERY) => {}
            _ = stopped.changed() => return,
        }
        let providers = store.capacity_providers().await;
        let (on, looking) = (subnets.clone(), subnets.clone());
        let check = move |tx: &mut crate::store::Tx<'_>, due: &Scheduled| {
            crate::ops::scaling::due(tx, &looking, &timings, &due.name)
        };
        each(&store, "capacity provider", providers, Some(check), move |tx, due| {
            crate::ops::scaling::pass(tx, &on, &timings, &due.name)
        })
        .await;
        let tasks = store.hosted_tasks().await;
        let (on, looking) = (subnets.clone(), subnets.clone());
        let check = move |tx: &mut crate::store::Tx<'_>, due: &Scheduled| match tx.task(&due.cluster, &due.name)? {
            Some(task) => crate::ops::fargate::due(tx, &looking, &task),
            None => Ok(false),
        };
        each(&store, "Fargate task", tasks, Some(check), move |tx, due| {
            crate::ops::fargate::advance(tx, &on, &due.cluster, &due.name)
        })
        .await;
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
