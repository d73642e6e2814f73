//! What every request is served with: the store, the credentials and regions, the throttle,
//! the limits, the agent channels' hub and timings, and the shutdown signal.

use std::sync::Arc;

use crate::auth::{Keys, Regions};
use crate::channels::{Hub, Timings};
use crate::server::Limits;
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
}
