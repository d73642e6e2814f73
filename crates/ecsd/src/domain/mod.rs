//! The ECS domain: resource records as ECS shows them, ARNs, the status machine, resource
//! accounting and placement. Pure functions and data, no I/O.

pub mod acs_task;
pub mod arn;
pub mod events;
pub mod health;
pub mod placement;
pub mod quantities;
pub mod query;
pub mod records;
pub mod status;
pub mod task_change;

pub use arn::Scope;

/// Seconds since the Unix epoch with millisecond precision, as ECS puts timestamps on the wire.
pub fn now() -> f64 {
    let elapsed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    elapsed.as_millis() as f64 / 1000.0
}

/// A fresh resource id in ECS's form: 32 lowercase hex digits.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Cluster names and task definition families: up to 255 letters, digits, hyphens and
/// underscores.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
