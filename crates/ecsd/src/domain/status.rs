//! The statuses of every resource, typed. Task and container statuses are ordered the way ECS
//! moves them, so that applying a report is `max(current, reported)`: repeated, late or
//! reordered reports never move a status backwards. Clusters, container instances and task
//! definitions have statuses of their own, with the model's wire names.

use serde::{Deserialize, Serialize};

use crate::shapes;

/// A task's `lastStatus` or `desiredStatus`, in lifecycle order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskStatus {
    Provisioning,
    Pending,
    Activating,
    Running,
    Deactivating,
    Stopping,
    Deprovisioning,
    Stopped,
    Deleted,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Provisioning => "PROVISIONING",
            TaskStatus::Pending => "PENDING",
            TaskStatus::Activating => "ACTIVATING",
            TaskStatus::Running => "RUNNING",
            TaskStatus::Deactivating => "DEACTIVATING",
            TaskStatus::Stopping => "STOPPING",
            TaskStatus::Deprovisioning => "DEPROVISIONING",
            TaskStatus::Stopped => "STOPPED",
            TaskStatus::Deleted => "DELETED",
        }
    }

    pub const ALL: [TaskStatus; 9] = [
        TaskStatus::Provisioning,
        TaskStatus::Pending,
        TaskStatus::Activating,
        TaskStatus::Running,
        TaskStatus::Deactivating,
        TaskStatus::Stopping,
        TaskStatus::Deprovisioning,
        TaskStatus::Stopped,
        TaskStatus::Deleted,
    ];

    /// A status by its wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The statuses an agent may report for a task.
    pub fn from_agent(s: &str) -> Option<Self> {
        match s {
            "PENDING" => Some(TaskStatus::Pending),
            "RUNNING" => Some(TaskStatus::Running),
            "STOPPED" => Some(TaskStatus::Stopped),
            _ => None,
        }
    }

    /// Whether a task in this status still holds its container instance's resources.
    pub fn holds_resources(self) -> bool {
        self < TaskStatus::Stopped
    }

    /// Counted as pending (rather than running) in cluster and instance task counts.
    pub fn is_pending(self) -> bool {
        self < TaskStatus::Running
    }
}

/// A container's `lastStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ContainerStatus {
    Pending,
    Running,
    Stopped,
}

impl ContainerStatus {
    pub fn from_agent(s: &str) -> Option<Self> {
        match s {
            "PENDING" => Some(ContainerStatus::Pending),
            "RUNNING" => Some(ContainerStatus::Running),
            "STOPPED" => Some(ContainerStatus::Stopped),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_ordered_by_lifecycle() {
        assert!(TaskStatus::Provisioning < TaskStatus::Pending);
        assert!(TaskStatus::Pending < TaskStatus::Running);
        assert!(TaskStatus::Running < TaskStatus::Stopped);
        assert_eq!(TaskStatus::Running.max(TaskStatus::Pending), TaskStatus::Running);
        assert!(ContainerStatus::Running < ContainerStatus::Stopped);
    }

    #[test]
    fn agents_report_only_three_task_statuses() {
        assert_eq!(TaskStatus::from_agent("RUNNING"), Some(TaskStatus::Running));
        assert_eq!(TaskStatus::from_agent("STOPPING"), None);
        assert_eq!(TaskStatus::from_agent("running"), None);
    }

    #[test]
    fn wire_names_match_the_serde_form() {
        for s in [
            TaskStatus::Provisioning,
            TaskStatus::Running,
            TaskStatus::Deprovisioning,
        ] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }
}

/// A status enum with its wire names (as serde and the store spell it).
macro_rules! statuses {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $wire:literal,)* }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $wire)] $variant,)*
        }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $wire,)*
                }
            }

            /// A status by its wire name.
            pub fn parse(s: &str) -> Option<Self> {
                match s {
                    $($wire => Some($name::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

statuses! {
    /// A cluster's `status`.
    ClusterStatus {
        Active => "ACTIVE",
        Provisioning => "PROVISIONING",
        Deprovisioning => "DEPROVISIONING",
        Failed => "FAILED",
        Inactive => "INACTIVE",
    }
}

statuses! {
    /// A service's `status`: DRAINING while DeleteService stops its tasks, then INACTIVE.
    ServiceStatus {
        Active => "ACTIVE",
        Draining => "DRAINING",
        Inactive => "INACTIVE",
    }
}

statuses! {
    /// A container instance's `status`; deregistered instances are INACTIVE.
    ContainerInstanceStatus {
        Active => "ACTIVE",
        Draining => "DRAINING",
        Registering => "REGISTERING",
        Deregistering => "DEREGISTERING",
        RegistrationFailed => "REGISTRATION_FAILED",
        Inactive => "INACTIVE",
    }
}

statuses! {
    /// A task definition revision's `status`.
    TaskDefinitionStatus {
        Active => "ACTIVE",
        Inactive => "INACTIVE",
        DeleteInProgress => "DELETE_IN_PROGRESS",
    }
}

/// The statuses a request can name (the model's enums), as stored.
impl From<shapes::TaskDefinitionStatus> for TaskDefinitionStatus {
    fn from(status: shapes::TaskDefinitionStatus) -> Self {
        match status {
            shapes::TaskDefinitionStatus::Active => TaskDefinitionStatus::Active,
            shapes::TaskDefinitionStatus::Inactive => TaskDefinitionStatus::Inactive,
            shapes::TaskDefinitionStatus::DeleteInProgress => TaskDefinitionStatus::DeleteInProgress,
        }
    }
}

impl From<shapes::ContainerInstanceStatus> for ContainerInstanceStatus {
    fn from(status: shapes::ContainerInstanceStatus) -> Self {
        match status {
            shapes::ContainerInstanceStatus::Active => ContainerInstanceStatus::Active,
            shapes::ContainerInstanceStatus::Draining => ContainerInstanceStatus::Draining,
            shapes::ContainerInstanceStatus::Registering => ContainerInstanceStatus::Registering,
            shapes::ContainerInstanceStatus::Deregistering => ContainerInstanceStatus::Deregistering,
            shapes::ContainerInstanceStatus::RegistrationFailed => ContainerInstanceStatus::RegistrationFailed,
        }
    }
}

impl From<shapes::DesiredStatus> for TaskStatus {
    fn from(status: shapes::DesiredStatus) -> Self {
        match status {
            shapes::DesiredStatus::Running => TaskStatus::Running,
            shapes::DesiredStatus::Pending => TaskStatus::Pending,
            shapes::DesiredStatus::Stopped => TaskStatus::Stopped,
        }
    }
}

/// A revision is registered ACTIVE.
impl Default for TaskDefinitionStatus {
    fn default() -> Self {
        TaskDefinitionStatus::Active
    }
}
