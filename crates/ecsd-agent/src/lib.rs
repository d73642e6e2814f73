//! Clients of an ECS control plane, kept apart from the server: [`client`] (a small ECS API
//! client, SigV4-signed, and the signed websocket upgrade of the agent channels), [`acs`] (the
//! agent's side of ACS: the channel URL as the Go agent builds it, message envelopes and the
//! replies the agent sends), [`sim`] (simulated container instances) and [`tail`] (`ecsd events
//! tail`). The end-to-end tests' fake agent speaks ACS through [`acs`] too.

pub mod acs;
pub mod client;
pub mod sim;
pub mod tail;
