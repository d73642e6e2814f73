//! The connections a server holds, and what it does when there are too many: at the limit
//! (overall, or for one client address) a new connection takes the place of the one that has
//! been idle longest — a keep-alive connection between requests, or one that never sent a
//! request — so idle connections can never lock clients out. Only when every connection is
//! busy is a new one answered `503` at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

/// One open connection, as the registry sees it.
pub struct Connection {
    id: u64,
    ip: IpAddr,
    /// Requests being served on it (a response is served until its body is sent).
    busy: AtomicUsize,
    /// When it last became idle, in microseconds since the registry started.
    idle_since: AtomicU64,
    /// Notified when the connection is to close, to make room for another.
    pub shed: Notify,
}

/// Marks a connection busy while it is held: from a request's arrival until its response's
/// body has been sent (or dropped).
pub struct Busy {
    connection: Arc<Connection>,
    started: Instant,
}

impl Drop for Busy {
    fn drop(&mut self) {
        let micros = self.started.elapsed().as_micros() as u64;
        self.connection.idle_since.fetch_max(micros, Ordering::Relaxed);
        self.connection.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why a connection was not admitted.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Every connection is busy: answer 503.
    Full,
    /// Every connection of this client address is busy: answer 503.
    ClientFull,
}

#[derive(Default)]
struct Registry {
    next: u64,
    open: HashMap<u64, Arc<Connection>>,
    per_ip: HashMap<IpAddr, usize>,
}

/// The connections of one server.
pub struct Connections {
    max: usize,
    max_per_client: usize,
    started: Instant,
    registry: Mutex<Registry>,
    /// Notified whenever a connection ends.
    ended: Notify,
}

/// Holds a connection's place until it ends.
pub struct Admitted {
    pub connection: Arc<Connection>,
    connections: Arc<Connections>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.connections.remove(&self.connection);
    }
}

impl Connection {
    /// Marks the connection busy until the guard is dropped.
    pub fn busy(self: &Arc<Self>, connections: &Connections) -> Busy {
        self.busy.fetch_add(1, Ordering::Relaxed);
        Busy {
            connection: self.clone(),
            started: connections.started,
        }
    }
}

impl Connections {
    pub fn new(max: usize, max_per_client: usize) -> Arc<Connections> {
        Arc::new(Connections {
            max: max.max(1),
            max_per_client: max_per_client.max(1),
            started: Instant::now(),
            registry: Mutex::default(),
            ended: Notify::new(),
        })
    }

    fn now(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    /// Admits a new connection from `ip`, closing the longest-idle connection (of that client,
    /// if it is the client's limit that is reached) to make room.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admitted, Refusal> {
        let mut registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        if registry.per_ip.get(&ip).copied().unwrap_or(0) >= self.max_per_client {
            let victim = Self::longest_idle(&registry, Some(ip)).ok_or(Refusal::ClientFull)?;
            Self::shed(&mut registry, &victim);
        }
        if registry.open.len() >= self.max {
            let victim = Self::longest_idle(&registry, None).ok_or(Refusal::Full)?;
            Self::shed(&mut registry, &victim);
        }
        registry.next += 1;
        let connection = Arc::new(Connection {
            id: registry.next,
            ip,
            busy: AtomicUsize::new(0),
            idle_since: AtomicU64::new(self.now()),
            shed: Notify::new(),
        });
        registry.open.insert(connection.id, connection.clone());
        *registry.per_ip.entry(ip).or_default() += 1;
        Ok(Admitted {
            connection,
            connections: self.clone(),
        })
    }

    fn longest_idle(registry: &Registry, ip: Option<IpAddr>) -> Option<Arc<Connection>> {
        registry
            .open
            .values()
            .filter(|c| ip.is_none_or(|ip| c.ip == ip) && c.busy.load(Ordering::Relaxed) == 0)
            .min_by_key(|c| c.idle_since.load(Ordering::Relaxed))
            .cloned()
    }

    /// Takes a connection out of the count and tells it to close; it finishes what it is
    /// serving, if anything arrived meanwhile.
    fn shed(registry: &mut Registry, victim: &Connection) {
        if registry.open.remove(&victim.id).is_some() {
            Self::uncount(registry, victim.ip);
            victim.shed.notify_one();
        }
    }

    fn uncount(registry: &mut Registry, ip: IpAddr) {
        if let Some(n) = registry.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                registry.per_ip.remove(&ip);
            }
        }
    }

    fn remove(&self, connection: &Connection) {
        let mut registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        if registry.open.remove(&connection.id).is_some() {
            Self::uncount(&mut registry, connection.ip);
        }
        drop(registry);
        self.ended.notify_waiters();
    }

    /// Connections open (shed ones no longer count).
    pub fn open(&self) -> usize {
        self.registry.lock().unwrap_or_else(|e| e.into_inner()).open.len()
    }

    /// Waits until no connection is left.
    pub async fn drained(&self) {
        loop {
            let ended = self.ended.notified();
            if self.open() == 0 {
                return;
            }
            ended.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn at_the_limit_the_longest_idle_connection_makes_room() {
        let connections = Connections::new(2, 10);
        let first = connections.admit(ip(1)).unwrap();
        let second = connections.admit(ip(1)).unwrap();
        let _working = second.connection.busy(&connections);
        let third = connections.admit(ip(2)).unwrap();
        assert_eq!(connections.open(), 2);
        // The idle one went, not the busy one.
        let shed = first.connection.shed.notified();
        tokio_test_ready(shed);
        let _busy = third.connection.busy(&connections);
        assert_eq!(connections.admit(ip(3)).err(), Some(Refusal::Full));
        drop(first);
        assert_eq!(connections.open(), 2, "a shed connection ending changes no count");
    }

    #[test]
    fn one_client_cannot_take_every_place() {
        let connections = Connections::new(100, 2);
        let a = connections.admit(ip(1)).unwrap();
        let b = connections.admit(ip(1)).unwrap();
        let _a_busy = a.connection.busy(&connections);
        let _b_busy = b.connection.busy(&connections);
        assert_eq!(connections.admit(ip(1)).err(), Some(Refusal::ClientFull));
        let _other = connections.admit(ip(2)).unwrap();
        drop(_b_busy);
        let _c = connections.admit(ip(1)).unwrap();
        assert_eq!(connections.open(), 3);
    }

    /// Asserts that a `Notify` permit was stored (the future resolves at once).
    fn tokio_test_ready(notified: tokio::sync::futures::Notified<'_>) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            tokio::time::timeout(std::time::Duration::from_millis(100), notified)
                .await
                .expect("the connection was told to close");
        });
    }
}
