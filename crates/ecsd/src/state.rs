//! What every request is served with: the store, the credentials and regions, the throttle,
//! the limits, the agent channels' hub and timings, and the shutdown signal.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::{Keys, Regions};
use crate::sessions::{Hub, Timings};
use crate::store::Store;
use crate::throttle::Throttle;

/// What every request is served with.
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub keys: Keys,
    pub regions: Regions,
    pub throttle: Throttle,
    pub limits: Limits,
    /// The base URL agents reach this server at.
    pub advertise_url: Arc<str>,
    /// Becomes true when the server stops, so that long-lived responses (event streams, agent
    /// channels) end.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// The agents connected to this process over ACS.
    pub channels: Arc<Hub>,
    pub timings: Timings,
    /// How long a web console session lasts.
    pub console_session: Duration,
}

/// Limits that keep one client from holding the server.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// Largest request head (request line and headers) accepted.
    pub max_header_bytes: usize,
    /// Connections served at once; past this, a new one takes the place of the longest idle.
    pub max_connections: usize,
    /// Connections one client address may hold at once, counted the same way.
    pub max_connections_per_client: usize,
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
            max_connections_per_client: 1024,
            header_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(30),
        }
    }
}
