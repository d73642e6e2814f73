//! ecsd: an Amazon ECS-compatible control plane.
//!
//! Layers, each knowing only the one below: [`wire`] (HTTP, the AWS JSON protocol, with
//! [`auth`] and [`throttle`]) →
//! [`ops`] (one module per resource family) → [`domain`] (records, ARNs, status machine,
//! placement; no I/O) and [`store`] (the storage trait and its backends). [`model`] holds the
//! ECS API model every request is checked against.

pub mod auth;
pub mod channels;
pub mod client;
pub mod connections;
pub mod domain;
pub mod error;
pub mod events_api;
pub mod gate;
pub mod model;
pub mod ops;
pub mod server;
pub mod sim;
pub mod state;
pub mod store;
pub mod throttle;
pub mod webhooks;
pub mod wire;
