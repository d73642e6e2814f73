//! Who is calling and what they may do: SigV4 verification ([`sigv4`]) against the principals
//! of a credentials file ([`policy`]). A handler only ever sees a [`Caller`] that was verified.

pub mod policy;
pub mod sigv4;

use std::sync::Arc;

pub use policy::{Keys, Principal};

/// A request's verified identity: the principal whose key signed it, and the region it was
/// signed for. Only [`sigv4::verify`] makes one.
#[derive(Clone, Debug)]
pub struct Caller {
    pub principal: Arc<Principal>,
    pub region: String,
}
