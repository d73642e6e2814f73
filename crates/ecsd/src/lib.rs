//! ecsd: an Amazon ECS-compatible control plane.
//!
//! # Layout
//!
//! Layers, each knowing only the ones below it:
//!
//! - [`server`]: the HTTP server — accept loop, [`connections`] (limits, shedding idle
//!   connections), the routes, background tasks (the service scheduler, sweeper, webhooks,
//!   agent leases).
//! - Doors into the server: [`wire`] (the ECS API, AWS JSON 1.1 on `POST /`), [`channels`]
//!   (the ACS and TCS websockets agents keep open; [`sessions`] holds who is connected where),
//!   [`events_api`] (the event log over HTTP), [`console`] (the web console, whose requests
//!   become API calls of the signed-in principal).
//!   Each lets requests in only through [`gate`] (SigV4 with [`auth`], served regions,
//!   [`throttle`], permissions, cluster scope); [`state`] is what they are all served with.
//! - [`ops`]: one module per resource family, one function per operation, taking and returning
//!   the [`shapes`] generated from the model; knows the domain and the store, not HTTP.
//!   [`model`] is the ECS API model (and the ACS/TCS models) every request and message is
//!   checked against; [`error`] the exceptions clients see.
//! - [`domain`]: records, ARNs, the status machine, placement, validation; pure, no I/O.
//! - [`store`]: records declared once, every query written once in the SQL both backends run
//!   (SQLite embedded, PostgreSQL shared), the backends only running transactions.
//! - [`webhooks`]: event delivery. The server's clients (the SigV4 client, simulated agents,
//!   `events tail`) are the `ecsd-agent` crate; the `ecsd` command is `ecsd-cli`.
//!
//! # One request, from bytes to disk: SubmitTaskStateChange
//!
//! 1. [`server`] accepts the connection ([`connections`] admits it) and hyper parses the
//!    head; oversized heads and declared bodies are refused there.
//! 2. [`wire::handle`] reads the body within its limits, [`gate::authenticate`] verifies the
//!    signature and region, [`wire::route`] finds the operation from `X-Amz-Target`, and
//!    [`gate::authorize`] throttles and checks the permission.
//! 3. [`model::Model::check_input`] checks the JSON against the operation's input shape; the
//!    gate checks every cluster the request names, by name or by ARN.
//! 4. [`ops::agent::submit_task_state_change`] runs in one store transaction: it finds the task,
//!    applies the report with [`domain::task_change::apply`] (statuses only move forward), and
//!    saves it with [`ops::tasks`]' `save_task`, which bumps the version, moves the instance's
//!    resource usage and appends the task's event.
//!    The closure reads and writes through [`store::Tx`], whose queries [`store::sql`] renders
//!    for the backend's database.
//! 5. The store commits ([`store::sqlite`]: a group commit with one fsync; [`store::postgres`]:
//!    one transaction under the write lock); only then is the answer written back.

pub mod auth;
pub mod channels;
pub mod connections;
pub mod console;
pub mod domain;
pub mod error;
pub mod events_api;
pub mod gate;
pub mod model;
pub mod monitoring;
pub mod ops;
pub mod server;
pub mod sessions;
pub mod shapes;
pub mod state;
pub mod store;
pub mod throttle;
pub mod webhooks;
pub mod wire;
