//! Storage: one trait for every backend (the embedded SQLite store is the default).
//!
//! A handler's work runs as a closure over a [`Tx`], a transaction bound to one account and
//! region: everything the closure reads and writes commits together or not at all, and the
//! caller's answer is sent only once the commit is durable. A closure that returns an error is a
//! domain abort: its writes are rolled back and the error goes back to the caller unchanged.
//! Store failures are typed [`StoreError`]s that handlers turn into `ServerException`.

#[cfg(test)]
mod conformance;
pub mod postgres;
pub mod sqlite;

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::domain::placement::{InstanceLoad, Reservation};
use crate::domain::records::{Cluster, ContainerInstance, StoredTaskDefinition, Task};
use crate::domain::status::{ContainerInstanceStatus, TaskDefinitionStatus, TaskStatus};
use crate::domain::Scope;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("database error: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("stored record is unreadable: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("{0} is not stored")]
    Missing(String),
    #[error("the store is shut down")]
    Closed,
    #[error("the store's worker failed: {0}")]
    Worker(String),
}

/// Cluster task and instance counts, derived from what is stored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterCounts {
    pub registered_container_instances: i64,
    pub running_tasks: i64,
    pub pending_tasks: i64,
    /// (launch type, running, pending) for each launch type with tasks.
    pub by_launch_type: Vec<(String, i64, i64)>,
}

impl ClusterCounts {
    /// Counts `n` tasks in `status` of `launch_type`.
    pub fn add(&mut self, status: TaskStatus, launch_type: &str, n: i64) {
        let (running, pending) = if status == TaskStatus::Running {
            (n, 0)
        } else if status.is_pending() {
            (0, n)
        } else {
            return;
        };
        self.running_tasks += running;
        self.pending_tasks += pending;
        match self.by_launch_type.iter_mut().find(|(l, _, _)| l == launch_type) {
            Some(entry) => {
                entry.1 += running;
                entry.2 += pending;
            }
            None => self.by_launch_type.push((launch_type.to_owned(), running, pending)),
        }
    }
}

/// Which tasks ListTasks wants.
#[derive(Clone, Debug)]
pub struct TaskFilter {
    pub desired_status: TaskStatus,
    pub container_instance: Option<String>,
    pub family: Option<String>,
    pub started_by: Option<String>,
    pub launch_type: Option<String>,
}

/// Which families ListTaskDefinitionFamilies wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FamilyStatus {
    /// With at least one ACTIVE revision.
    Active,
    /// With no ACTIVE revision.
    Inactive,
    All,
}

/// A task to store for the first time, with what it holds and how it is found.
pub struct NewTask<'a> {
    pub cluster: &'a str,
    /// The id of the container instance it is placed on.
    pub instance: Option<&'a str>,
    pub family: &'a str,
    pub client_token: Option<&'a str>,
    /// The fingerprint of the request that came with the client token.
    pub client_request: Option<&'a str>,
    pub task: &'a Task,
    pub reservation: &'a Reservation,
}

/// One transaction over the resources of one scope. Lists are ordered by key and resume after
/// the `after` key, so pagination tokens stay valid while other records come and go.
pub trait Tx {
    fn scope(&self) -> &Scope;

    fn cluster(&mut self, name: &str) -> Result<Option<Cluster>, StoreError>;
    fn put_cluster(&mut self, cluster: &Cluster) -> Result<(), StoreError>;
    fn list_clusters(&mut self, after: Option<&str>, limit: usize) -> Result<Vec<Cluster>, StoreError>;
    fn cluster_counts(&mut self, cluster: &str) -> Result<ClusterCounts, StoreError>;

    fn task_definition(&mut self, family: &str, revision: i64) -> Result<Option<StoredTaskDefinition>, StoreError>;
    /// The newest ACTIVE revision of a family.
    fn latest_task_definition(&mut self, family: &str) -> Result<Option<StoredTaskDefinition>, StoreError>;
    /// The highest revision ever registered in a family (0 if none), active or not.
    fn last_revision(&mut self, family: &str) -> Result<i64, StoreError>;
    fn put_task_definition(
        &mut self,
        family: &str,
        revision: i64,
        status: TaskDefinitionStatus,
        td: &StoredTaskDefinition,
    ) -> Result<(), StoreError>;
    /// (family, revision) of the definitions in `status` whose family starts with the prefix,
    /// ordered by family then revision, resuming after `after`.
    fn list_task_definitions(
        &mut self,
        family_prefix: Option<&str>,
        status: TaskDefinitionStatus,
        descending: bool,
        after: Option<(&str, i64)>,
        limit: usize,
    ) -> Result<Vec<(String, i64)>, StoreError>;
    fn list_task_definition_families(
        &mut self,
        family_prefix: Option<&str>,
        status: FamilyStatus,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError>;

    fn container_instance(&mut self, cluster: &str, id: &str) -> Result<Option<ContainerInstance>, StoreError>;
    fn put_container_instance(
        &mut self,
        cluster: &str,
        id: &str,
        instance: &ContainerInstance,
    ) -> Result<(), StoreError>;
    /// The instances in `status`; with none, those in every status but INACTIVE
    /// (deregistered instances are found only by ARN).
    fn list_container_instances(
        &mut self,
        cluster: &str,
        status: Option<ContainerInstanceStatus>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ContainerInstance>, StoreError>;
    /// What the tasks placed on an instance hold, summed over those not yet STOPPED.
    fn instance_load(&mut self, cluster: &str, id: &str) -> Result<InstanceLoad, StoreError>;
    /// [`Tx::instance_load`] of every instance of a cluster that holds anything, in one read.
    fn cluster_loads(&mut self, cluster: &str) -> Result<HashMap<String, InstanceLoad>, StoreError>;

    fn task(&mut self, cluster: &str, id: &str) -> Result<Option<Task>, StoreError>;
    /// Stores a new task; it holds its reservation on its instance until it is STOPPED.
    fn insert_task(&mut self, new: &NewTask<'_>) -> Result<(), StoreError>;
    /// Appends an event (its envelope as JSON) after every earlier one, with the notice it
    /// carries for the agent channels (an encoded [`crate::domain::events::Notice`]), if any.
    fn append_event(
        &mut self,
        cluster: &str,
        detail_type: &str,
        time: f64,
        body: &str,
        notice: Option<&str>,
    ) -> Result<(), StoreError>;
    /// The task that holds an attachment (an ENI, say), by the attachment's id.
    fn task_with_attachment(&mut self, cluster: &str, attachment_id: &str) -> Result<Option<Task>, StoreError>;
    /// The tasks a RunTask with this client token created, each with the fingerprint of that
    /// request (None for tasks stored before fingerprints were kept).
    fn tasks_by_client_token(&mut self, cluster: &str, token: &str) -> Result<Vec<(Task, Option<String>)>, StoreError>;
    /// Ids of the tasks that pass `filter`, in id order, resuming after `after`.
    fn list_tasks(
        &mut self,
        cluster: &str,
        filter: &TaskFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError>;
    /// The tasks placed on an instance that are not yet STOPPED, in id order, each with the
    /// desired status its agent last acknowledged receiving (None: never delivered).
    fn instance_tasks(&mut self, cluster: &str, instance: &str) -> Result<Vec<(Task, Option<TaskStatus>)>, StoreError>;
    /// Takes the next `count` sequence numbers of an instance's ACS messages and returns the
    /// first: they increase across connections, restarts and processes.
    fn next_message_seq(&mut self, cluster: &str, id: &str, count: i64) -> Result<i64, StoreError>;
    /// Records that a task's agent acknowledged receiving it with `desired` status. Once
    /// STOPPED was acknowledged, a late acknowledgement of RUNNING changes nothing.
    fn set_delivered(&mut self, cluster: &str, id: &str, desired: TaskStatus) -> Result<(), StoreError>;
    /// Replaces a stored task.
    fn update_task(&mut self, cluster: &str, task: &Task) -> Result<(), StoreError>;
    /// The process that holds the instance's agent connection, if one does.
    fn agent_holder(&mut self, cluster: &str, id: &str) -> Result<Option<String>, StoreError>;
    /// Records which process holds the instance's agent connection (None: no process does).
    fn set_agent_holder(&mut self, cluster: &str, id: &str, process: Option<&str>) -> Result<(), StoreError>;
}

/// An instance whose agent connection is held by a process whose lease has lapsed: that
/// process died (or stalled) without recording that the connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LapsedAgent {
    pub scope: Scope,
    pub cluster: String,
    pub id: String,
    /// The process recorded as holding the connection.
    pub process: String,
}

/// A boxed future, so that `Store` can be used as a trait object.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type Erased = Box<dyn Any + Send>;
/// A closure over a transaction with its result and error types erased.
pub type TxFn = Box<dyn FnOnce(&mut dyn Tx) -> Result<Erased, Erased> + Send>;

/// Which events to read: those after `after`, oldest first, matching every filter given.
#[derive(Clone, Debug, Default)]
pub struct EventQuery {
    pub after: i64,
    pub limit: usize,
    pub account: Option<String>,
    pub region: Option<String>,
    pub cluster: Option<String>,
    pub detail_type: Option<String>,
    /// Only events that carry a notice for the agent channels.
    pub noticed: bool,
}

/// An event as stored: its sequence number and its envelope as JSON text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    pub seq: i64,
    pub body: String,
    /// The notice for the agent channels, as stored.
    pub notice: Option<String>,
}

pub struct EventPage {
    pub events: Vec<StoredEvent>,
    /// The highest sequence number committed when the page was read; the page holds nothing
    /// beyond it, so a short page can resume from here.
    pub last_seq: i64,
}

/// What a sweep removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub events: u64,
    pub tasks: u64,
}

/// A storage backend. Use [`StoreExt::read`] and [`StoreExt::write`], which keep the types.
pub trait Store: Send + Sync + 'static {
    /// Runs `f` in a transaction of `scope`. Writes are committed durably before the future
    /// resolves; a closure that returns `Err` has its writes rolled back.
    fn transact(&self, scope: Scope, write: bool, f: TxFn) -> BoxFuture<Result<Result<Erased, Erased>, StoreError>>;
    /// Events in sequence order. Sequence numbers are never reused and a reader never sees one
    /// before every smaller one is visible.
    fn events(&self, query: EventQuery) -> BoxFuture<Result<EventPage, StoreError>>;
    /// A named, durable position in the event sequence (a webhook's delivery cursor); 0 if unset.
    fn cursor(&self, name: String) -> BoxFuture<Result<i64, StoreError>>;
    fn set_cursor(&self, name: String, seq: i64) -> BoxFuture<Result<(), StoreError>>;
    /// Removes events older than `events_before` and tasks STOPPED before `stopped_tasks_before`.
    fn sweep(&self, events_before: f64, stopped_tasks_before: f64) -> BoxFuture<Result<Swept, StoreError>>;
    /// Extends a process's lease on the agent connections it holds to `ttl` from now (by the
    /// store's clock, which every process sharing the store agrees on).
    fn renew_lease(&self, process: String, ttl: Duration) -> BoxFuture<Result<(), StoreError>>;
    /// Ends a process's lease: it holds no connection any more.
    fn end_lease(&self, process: String) -> BoxFuture<Result<(), StoreError>>;
    /// The instances whose agent connection is held by a process without a live lease.
    fn lapsed_agents(&self) -> BoxFuture<Result<Vec<LapsedAgent>, StoreError>>;
    /// Changes whenever a write is committed, so that readers of events can wait for more.
    fn commits(&self) -> tokio::sync::watch::Receiver<u64>;
    /// Finishes what is queued and releases the store; later transactions fail. Blocking.
    fn close(&self) {}
}

pub trait StoreExt {
    fn read<R, E, F>(&self, scope: &Scope, f: F) -> impl Future<Output = Result<R, E>> + Send
    where
        F: FnOnce(&mut dyn Tx) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static;

    fn write<R, E, F>(&self, scope: &Scope, f: F) -> impl Future<Output = Result<R, E>> + Send
    where
        F: FnOnce(&mut dyn Tx) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static;
}

impl StoreExt for dyn Store {
    fn read<R, E, F>(&self, scope: &Scope, f: F) -> impl Future<Output = Result<R, E>> + Send
    where
        F: FnOnce(&mut dyn Tx) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let erased: TxFn = Box::new(move |tx| erase(f(tx)));
        let fut = self.transact(scope.clone(), false, erased);
        async move { unerase(fut.await) }
    }

    fn write<R, E, F>(&self, scope: &Scope, f: F) -> impl Future<Output = Result<R, E>> + Send
    where
        F: FnOnce(&mut dyn Tx) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let erased: TxFn = Box::new(move |tx| erase(f(tx)));
        let fut = self.transact(scope.clone(), true, erased);
        async move { unerase(fut.await) }
    }
}

fn erase<R: Send + 'static, E: Send + 'static>(r: Result<R, E>) -> Result<Erased, Erased> {
    match r {
        Ok(v) => Ok(Box::new(v)),
        Err(e) => Err(Box::new(e)),
    }
}

fn unerase<R: 'static, E: From<StoreError> + 'static>(r: Result<Result<Erased, Erased>, StoreError>) -> Result<R, E> {
    let mismatch = || E::from(StoreError::Worker("a transaction returned an unexpected type".into()));
    match r {
        Err(e) => Err(E::from(e)),
        Ok(Ok(v)) => v.downcast::<R>().map(|v| *v).map_err(|_| mismatch()),
        Ok(Err(e)) => Err(e.downcast::<E>().map(|e| *e).unwrap_or_else(|_| mismatch())),
    }
}
