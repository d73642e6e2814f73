//! The HTTP server: opens the store, serves the API on an already-bound listener until told
//! to stop, then drains in-flight requests and closes the store.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;

use crate::domain::Scope;
use crate::error::ApiError;
use crate::store::{SqliteStore, StoreError};
use crate::wire::{self, AppState};

/// The file the embedded store keeps its database in, inside the data directory.
pub const DATABASE_FILE: &str = "ecsd.sqlite3";

/// What `ecsd serve` runs with.
#[derive(Clone, Debug)]
pub struct Options {
    pub data_dir: PathBuf,
    pub region: String,
    pub account_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// The routes: `POST /` for the API, `GET /health`, and a JSON 404 for anything else.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", post(wire::handle))
        .route(
            "/health",
            get(|| async { (StatusCode::OK, "{\"status\":\"ok\"}") }),
        )
        .fallback(|| async {
            let err = ApiError::unknown_operation(
                "Not found: ECS API calls are POST / with an X-Amz-Target header.",
            );
            let mut response = wire::error_response(&uuid::Uuid::new_v4().to_string(), &err);
            *response.status_mut() = StatusCode::NOT_FOUND;
            response
        })
        .with_state(state)
}

/// A server whose store is open, ready to serve.
pub struct Server {
    store: Arc<SqliteStore>,
    state: Arc<AppState>,
}

impl Server {
    /// Opens (creating and migrating if needed) the embedded store in the data directory.
    pub async fn open(options: Options) -> Result<Server, ServeError> {
        std::fs::create_dir_all(&options.data_dir).map_err(|source| ServeError::DataDir {
            path: options.data_dir.clone(),
            source,
        })?;
        let path = options.data_dir.join(DATABASE_FILE);
        let store = tokio::task::spawn_blocking(move || SqliteStore::open(&path))
            .await
            .map_err(std::io::Error::other)??;
        let store = Arc::new(store);
        let state = Arc::new(AppState {
            store: store.clone(),
            scope: Scope::new(options.account_id, options.region),
        });
        Ok(Server { store, state })
    }

    /// Serves on `listener` until `shutdown` resolves, then lets in-flight requests finish and
    /// closes the store (everything acknowledged is committed).
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let served = axum::serve(listener, router(self.state))
            .with_graceful_shutdown(shutdown)
            .await;
        let store = self.store;
        tokio::task::spawn_blocking(move || store.close())
            .await
            .map_err(std::io::Error::other)?;
        Ok(served?)
    }
}
