//! The ACS sessions of this process, by container instance, and what wakes them: the event log.
//!
//! Every task and instance change appends an event in the transaction that makes it, whichever
//! process makes it, and a change that an agent must hear of carries a typed notice naming its
//! instance, so one reader per process that follows the notices wakes that instance's session,
//! if it is connected here. Sessions then
//! read what they have to send; nothing else needs to know that agents are connected.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::domain::events::Notice;
use crate::store::{EventQuery, Store};

/// Events read at once while following the log.
const BATCH: usize = 500;
/// Commits that come this close together are read as one batch.
const COALESCE: Duration = Duration::from_millis(20);

/// What a session listens to.
pub struct Listener {
    generation: u64,
    /// Something about the instance's tasks changed.
    pub wake: Notify,
    /// The instance itself changed (it may have been deregistered).
    pub instance_changed: AtomicBool,
    /// A newer connection of the same instance took over.
    pub replaced: Notify,
}

#[derive(Default)]
struct Slot {
    current: Option<Arc<Listener>>,
    /// Held while a connection of this instance opens or closes, so that the stored
    /// `agentConnected` ends as the last connection left it.
    transitions: Arc<tokio::sync::Mutex<()>>,
}

pub struct Hub {
    /// This process's name in the store, under which it holds its agents' connections.
    process: String,
    slots: Mutex<HashMap<String, Slot>>,
    generations: AtomicU64,
    /// Sessions running, until they have recorded their end.
    live: AtomicUsize,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            process: uuid::Uuid::new_v4().to_string(),
            slots: Mutex::default(),
            generations: AtomicU64::default(),
            live: AtomicUsize::default(),
        }
    }
}

/// Counts a session as running while it is held.
pub struct Running<'a>(&'a Hub);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Hub {
    /// The name this process holds agent connections under (see [`super::lease`]).
    pub fn process(&self) -> &str {
        &self.process
    }

    /// Counts a session as running until the returned guard is dropped.
    pub fn running(&self) -> Running<'_> {
        self.live.fetch_add(1, Ordering::Relaxed);
        Running(self)
    }

    /// Sessions running, including those still recording that they ended.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// The lock that orders the opening and closing of an instance's connections.
    pub fn transitions(&self, instance_arn: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.entry(instance_arn.to_owned()).or_default().transitions.clone()
    }

    /// Makes a new session the instance's current one; an earlier one is told to end.
    pub fn register(&self, instance_arn: &str) -> Arc<Listener> {
        let listener = Arc::new(Listener {
            generation: self.generations.fetch_add(1, Ordering::Relaxed),
            wake: Notify::new(),
            instance_changed: AtomicBool::new(false),
            replaced: Notify::new(),
        });
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let slot = slots.entry(instance_arn.to_owned()).or_default();
        if let Some(old) = slot.current.replace(listener.clone()) {
            old.replaced.notify_one();
        }
        listener
    }

    /// Removes a session that ended; true if it was still the instance's current one.
    pub fn unregister(&self, instance_arn: &str, listener: &Listener) -> bool {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        match slots.get_mut(instance_arn) {
            Some(slot)
                if slot
                    .current
                    .as_ref()
                    .is_some_and(|c| c.generation == listener.generation) =>
            {
                slot.current = None;
                true
            }
            _ => false,
        }
    }

    /// Sessions open now.
    pub fn connected(&self) -> usize {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.values().filter(|s| s.current.is_some()).count()
    }

    fn wake(&self, instance_arn: &str, instance_changed: bool) {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(listener) = slots.get(instance_arn).and_then(|s| s.current.as_ref()) {
            if instance_changed {
                listener.instance_changed.store(true, Ordering::Relaxed);
            }
            listener.wake.notify_one();
        }
    }

    /// Wakes the session of the instance a change's notice names, if it is connected here.
    fn route(&self, notice: &Notice) {
        self.wake(notice.instance_arn(), matches!(notice, Notice::Instance { .. }));
    }

    /// Follows the event log from its current end until the server stops, waking the sessions
    /// that changes concern.
    pub async fn follow(self: Arc<Self>, store: Arc<dyn Store>, mut stopped: watch::Receiver<bool>) {
        let mut commits = store.commits();
        let mut cursor: Option<i64> = None;
        loop {
            // With no session to wake (or no position yet), only the end of the log is read.
            let reading = cursor.is_some() && self.connected() > 0;
            let query = EventQuery {
                after: cursor.unwrap_or(i64::MAX),
                limit: if reading { BATCH } else { 0 },
                noticed: true,
                ..EventQuery::default()
            };
            commits.borrow_and_update();
            match store.events(query).await {
                Ok(page) => {
                    let full = page.events.len() == BATCH;
                    for notice in page
                        .events
                        .iter()
                        .filter_map(|e| e.notice.as_deref())
                        .filter_map(Notice::decode)
                    {
                        self.route(&notice);
                    }
                    // A session that connected during a read that skipped events gets them on
                    // the next read.
                    if reading || cursor.is_none() || self.connected() == 0 {
                        cursor = Some(match page.events.last() {
                            Some(last) if full => last.seq,
                            _ => page.last_seq,
                        });
                    }
                    if full {
                        continue;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot follow the event log; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
            tokio::select! {
                changed = commits.changed() => if changed.is_err() { return },
                _ = stopped.changed() => return,
            }
            tokio::time::sleep(COALESCE).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_connection_replaces_the_older() {
        let hub = Hub::default();
        let first = hub.register("arn:i");
        let second = hub.register("arn:i");
        assert!(
            !hub.unregister("arn:i", &first),
            "the replaced session no longer owns the instance"
        );
        assert_eq!(hub.connected(), 1);
        assert!(hub.unregister("arn:i", &second));
        assert_eq!(hub.connected(), 0);
    }

    #[test]
    fn notices_wake_the_session_of_their_instance() {
        let hub = Hub::default();
        let listener = hub.register("arn:i");
        hub.route(&Notice::Tasks {
            instance_arn: "arn:i".into(),
        });
        assert!(!listener.instance_changed.load(Ordering::Relaxed));
        hub.route(&Notice::Instance {
            instance_arn: "arn:i".into(),
        });
        assert!(listener.instance_changed.load(Ordering::Relaxed));
        hub.route(&Notice::Tasks {
            instance_arn: "arn:other".into(),
        });
    }
}
