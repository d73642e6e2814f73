//! The agent sessions of this process, apart from the websocket protocol they speak
//! ([`crate::channels`]): the [`Hub`] that knows which instances are connected here and wakes
//! their sessions, how often sessions speak and wait ([`Timings`]), and the [`lease`] that tells
//! every process which process holds which agent's connection.

mod hub;
pub mod lease;

use std::time::Duration;

pub use hub::{Hub, Listener};

/// How often the server speaks on a channel and how long it waits for the agent.
#[derive(Clone, Copy, Debug)]
pub struct Timings {
    /// Between heartbeats (the agent drops a connection silent for a minute or more).
    pub heartbeat: Duration,
    /// Between task manifests.
    pub manifest: Duration,
    /// How long a task sent in a payload waits for the agent's acknowledgement before it is
    /// sent again.
    pub resend_after: Duration,
    /// An agent silent this long (no message, no acknowledgement) is taken for gone.
    pub idle_timeout: Duration,
    /// The longest one message may take to send before the agent is taken for gone.
    pub send_timeout: Duration,
}

impl Timings {
    /// The timings that follow from a heartbeat period: a task is sent again after three
    /// heartbeats without its acknowledgement, and an agent silent for six is taken for gone
    /// (an agent that does not take a message within 30 s is too).
    pub fn with_heartbeat(heartbeat: Duration, manifest: Duration) -> Timings {
        Timings {
            heartbeat,
            manifest,
            resend_after: heartbeat * 3,
            idle_timeout: heartbeat * 6,
            send_timeout: Duration::from_secs(30),
        }
    }
}

impl Default for Timings {
    fn default() -> Self {
        Timings::with_heartbeat(Duration::from_secs(10), Duration::from_secs(60))
    }
}
