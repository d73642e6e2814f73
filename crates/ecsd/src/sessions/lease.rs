//! Leases on agent connections. A process records itself as the holder of each agent
//! connection it serves, and keeps a lease in the store that it renews every heartbeat. A
//! process that dies cannot record its connections as ended, so every process also looks for
//! connections whose holder's lease has lapsed and records them as ended: `agentConnected`
//! turns false within a few heartbeats of its holder's death, on one SQLite process restarted
//! or on any of several processes sharing PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{Hub, Timings};
use crate::ops::acs as ops;
use crate::store::Store;

/// Heartbeats a lease outlives its last renewal: one late renewal does not lose it.
pub const LEASE_HEARTBEATS: u32 = 3;

/// How long a renewed lease lasts.
pub fn lease_ttl(timings: &Timings) -> Duration {
    timings.heartbeat * LEASE_HEARTBEATS
}

/// Renews this process's lease, then releases the connections of lapsed processes, every
/// heartbeat until the server stops. The lease itself is ended by the server once its own
/// sessions have recorded their end ([`Store::end_lease`]).
pub async fn keep(store: Arc<dyn Store>, hub: Arc<Hub>, timings: Timings, mut stopped: watch::Receiver<bool>) {
    loop {
        renew(store.as_ref(), &hub, &timings).await;
        match ops::release_lapsed(store.as_ref()).await {
            Ok(0) => {}
            Ok(released) => tracing::info!(released, "released agent connections of lapsed processes"),
            Err(e) => tracing::warn!(error = %e, "cannot release the connections of lapsed processes"),
        }
        tokio::select! {
            _ = tokio::time::sleep(timings.heartbeat) => {}
            _ = stopped.changed() => return,
        }
    }
}

/// Extends this process's lease by [`lease_ttl`] from now.
pub async fn renew(store: &dyn Store, hub: &Hub, timings: &Timings) {
    if let Err(e) = store.renew_lease(hub.process().to_owned(), lease_ttl(timings)).await {
        tracing::warn!(error = %e, "cannot renew the lease on this process's agent connections");
    }
}
