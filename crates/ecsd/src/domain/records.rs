//! Resource records in the shapes of the ECS model (member names exactly as the model spells
//! them). Members that ecsd does not interpret are kept as JSON, exactly as the client sent them,
//! so nothing a client stores is dropped. Counts and remaining resources are not stored: they
//! are derived from the tasks when a record is shown (see `ops`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::status::{
    ClusterStatus, ContainerInstanceStatus, ContainerStatus, ServiceStatus, TaskDefinitionStatus, TaskStatus,
};

/// Tags, attributes and resources are stored as the model has them.
pub use crate::shapes::{Attribute, KeyValuePair, NetworkBinding, Resource, Tag};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cluster {
    pub cluster_arn: String,
    pub cluster_name: String,
    pub status: ClusterStatus,
    /// `tags`, `settings`, `configuration`, `capacityProviders`,
    /// `defaultCapacityProviderStrategy`, `serviceConnectDefaults`: as the client set them.
    #[serde(flatten)]
    pub options: Map<String, Value>,
}

/// What most requests need of a stored cluster, its status, read without the rest of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub struct ClusterState {
    pub status: ClusterStatus,
}

/// A registered container instance as stored; `ops` adds the derived members
/// (`remainingResources`, `runningTasksCount`, `pendingTasksCount`) when showing it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerInstance {
    pub container_instance_arn: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ec2_instance_id: Option<String>,
    pub version: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version_info: Option<Value>,
    pub registered_resources: Vec<Resource>,
    pub status: ContainerInstanceStatus,
    pub agent_connected: bool,
    pub attributes: Vec<Attribute>,
    pub registered_at: f64,
    pub attachments: Vec<Value>,
    pub tags: Vec<Tag>,
    /// `ContainerInstanceHealthStatus`, as the agent last published it over TCS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_status: Option<Value>,
}

/// `ManagedAgent` in the model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManagedAgent {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_started_at: Option<f64>,
}

/// `Container` in the model: one per container definition of the task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    pub container_arn: String,
    pub task_arn: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_id: Option<String>,
    pub last_status: ContainerStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub network_bindings: Vec<NetworkBinding>,
    pub network_interfaces: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_status: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub managed_agents: Vec<ManagedAgent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_reservation: Option<String>,
}

/// `Attachment` in the model (an ENI of an awsvpc task, for instance).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
    pub details: Vec<KeyValuePair>,
}

/// `Task` in the model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    pub task_arn: String,
    pub cluster_arn: String,
    pub task_definition_arn: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_instance_arn: Option<String>,
    pub overrides: Value,
    pub last_status: TaskStatus,
    pub desired_status: TaskStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    pub containers: Vec<Container>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_by: Option<String>,
    pub version: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connectivity: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connectivity_at: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull_started_at: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull_stopped_at: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution_stopped_at: Option<f64>,
    pub created_at: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopping_at: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub launch_type: Option<String>,
    pub attachments: Vec<Attachment>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_status: Option<String>,
    /// `platformVersion`, `ephemeralStorage`, `capacityProviderName` and other members copied
    /// from the request or the task definition without interpretation.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
    // These two are serialized last, after `extra`, so that `Task::untagged` can tell from the
    // end of any task's text.
    pub tags: Vec<Tag>,
    pub enable_execute_command: bool,
}

impl Task {
    /// The id at the end of the task ARN.
    pub fn id(&self) -> &str {
        self.task_arn.rsplit('/').next().unwrap_or_default()
    }

    /// Whether `doc`, a task as this record serializes it, has no tags. Its last two members
    /// are `tags` and `enableExecuteCommand`, so an untagged task's text ends in one of two
    /// ways, and nothing nested can end it so. (A document written before that order was
    /// chosen may not end so though untagged: that answers false, never wrongly true.)
    pub fn untagged(doc: &str) -> bool {
        doc.strip_suffix(r#"true}"#)
            .or_else(|| doc.strip_suffix(r#"false}"#))
            .is_some_and(|rest| rest.ends_with(r#","tags":[],"enableExecuteCommand":"#))
    }
}

/// The parts of a stored task definition that placement and task creation read; the stored
/// document keeps every member the client sent.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskDefinitionSpec {
    pub task_definition_arn: String,
    pub family: String,
    pub revision: i64,
    pub status: TaskDefinitionStatus,
    #[serde(default)]
    pub network_mode: Option<String>,
    #[serde(default)]
    pub cpu: Option<String>,
    #[serde(default)]
    pub memory: Option<String>,
    #[serde(default)]
    pub container_definitions: Vec<ContainerSpec>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSpec {
    pub name: String,
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub cpu: Option<i32>,
    #[serde(default)]
    pub memory: Option<i32>,
    #[serde(default)]
    pub memory_reservation: Option<i32>,
    #[serde(default)]
    pub essential: Option<bool>,
    #[serde(default)]
    pub port_mappings: Vec<PortMappingSpec>,
    #[serde(default)]
    pub docker_labels: std::collections::BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMappingSpec {
    #[serde(default)]
    pub container_port: Option<i32>,
    #[serde(default)]
    pub host_port: Option<i32>,
    #[serde(default)]
    pub protocol: Option<String>,
}

/// A registered task definition: the `TaskDefinition` shape as shown, plus its tags (which the
/// model returns beside the definition, not inside it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredTaskDefinition {
    pub definition: Map<String, Value>,
    pub tags: Vec<Tag>,
}

impl StoredTaskDefinition {
    pub fn spec(&self) -> Result<TaskDefinitionSpec, serde_json::Error> {
        TaskDefinitionSpec::deserialize(Value::Object(self.definition.clone()))
    }

    /// The revision's status (ACTIVE if the document does not say).
    pub fn status(&self) -> TaskDefinitionStatus {
        self.definition
            .get("status")
            .and_then(Value::as_str)
            .and_then(TaskDefinitionStatus::parse)
            .unwrap_or_default()
    }

    pub fn set_status(&mut self, status: TaskDefinitionStatus) {
        self.definition.insert("status".into(), status.as_str().into());
    }
}

/// A service (`Service` in the model) as stored: what the scheduler works from, with every
/// other member the client set kept as sent. Counts are derived from its tasks when shown.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    pub service_arn: String,
    pub service_name: String,
    pub cluster_arn: String,
    pub status: ServiceStatus,
    pub desired_count: i64,
    pub task_definition: String,
    pub launch_type: String,
    pub scheduling_strategy: String,
    /// `maximumPercent`, `minimumHealthyPercent`, `deploymentCircuitBreaker`, with ECS's defaults.
    pub deployment_configuration: Value,
    /// Newest (PRIMARY) first.
    pub deployments: Vec<Deployment>,
    /// Newest first, at most 100.
    pub events: Vec<ServiceEvent>,
    pub created_at: f64,
    pub created_by: String,
    /// What the scheduler keeps between passes; not part of the model's shape.
    #[serde(default)]
    pub scheduler: SchedulerState,
    /// The service deployments and revisions, newest first; not part of the model's shape.
    #[serde(default)]
    pub history: History,
    /// The task sets of a service with the EXTERNAL deployment controller.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub task_sets: Vec<TaskSetRecord>,
    /// `placementStrategy`, `placementConstraints`, `networkConfiguration`, `tags`,
    /// `propagateTags`, `enableECSManagedTags`, `platformVersion`, ...: as the client set them.
    #[serde(flatten)]
    pub options: Map<String, Value>,
}

impl Service {
    /// How its tasks run: its launch type, or for a capacity provider strategy FARGATE when
    /// the strategy's providers are Fargate's, else EC2.
    pub fn runs_as(&self) -> &str {
        if !self.launch_type.is_empty() {
            return &self.launch_type;
        }
        let fargate = self
            .options
            .get("capacityProviderStrategy")
            .and_then(Value::as_array)
            .and_then(|s| s.first())
            .and_then(|i| i.get("capacityProvider"))
            .and_then(Value::as_str)
            .is_some_and(|p| p.starts_with("FARGATE"));
        if fargate {
            "FARGATE"
        } else {
            "EC2"
        }
    }
}

/// `Deployment` in the model, without the counts (derived from the tasks when shown).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    /// `ecs-svc/` and digits; the tasks it starts say so in `startedBy`.
    pub id: String,
    /// PRIMARY (the newest) or ACTIVE.
    pub status: String,
    pub task_definition: String,
    pub desired_count: i64,
    pub failed_tasks: i64,
    pub created_at: f64,
    pub updated_at: f64,
    pub launch_type: String,
    pub rollout_state: String,
    pub rollout_state_reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_configuration: Option<Value>,
    /// The service deployment it carries out.
    #[serde(default)]
    pub service_deployment: String,
    /// The capacity provider strategy its tasks are spread by (none: its launch type).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_provider_strategy: Option<Value>,
}

/// A service's recent service deployments and revisions, newest first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct History {
    pub deployments: Vec<ServiceDeploymentRecord>,
    /// Each a `ServiceRevision` as shown, keyed by its id.
    pub revisions: Vec<(String, Value)>,
}

/// A service deployment (`ServiceDeployment` in the model), by ids.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceDeploymentRecord {
    pub id: String,
    /// PENDING, IN_PROGRESS, SUCCESSFUL, STOP_REQUESTED, STOPPED, ROLLBACK_REQUESTED,
    /// ROLLBACK_IN_PROGRESS, ROLLBACK_SUCCESSFUL, ROLLBACK_FAILED.
    pub status: String,
    pub status_reason: Option<String>,
    pub created_at: f64,
    pub started_at: Option<f64>,
    pub finished_at: Option<f64>,
    pub stopped_at: Option<f64>,
    pub updated_at: f64,
    /// Revision ids it moves tasks from, and the one it moves them to.
    pub source_revisions: Vec<String>,
    pub target_revision: String,
    pub deployment_configuration: Value,
    /// Where a rollback went: (reason, started at, revision id).
    pub rollback: Option<(String, f64, String)>,
    pub breaker_failures: i64,
    pub breaker_threshold: i64,
    /// DISABLED, MONITORING or TRIGGERED.
    pub breaker_status: String,
}

/// `ServiceEvent` in the model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEvent {
    pub id: String,
    pub created_at: f64,
    pub message: String,
}

/// The scheduler's memory of a service, kept in its record so that a restart (or another
/// process) carries on where it left off.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchedulerState {
    /// Until when no task is started (back-off after tasks that failed to start).
    pub hold_until: f64,
    /// Tasks of the PRIMARY deployment that stopped before running, one after another.
    pub failed_starts: u32,
    /// Stopped tasks up to this time have been looked at.
    pub checked_until: f64,
    /// A task of the PRIMARY deployment has run (the circuit breaker's first stage is over).
    #[serde(default)]
    pub primary_ran: bool,
    /// Tasks of the PRIMARY deployment replaced for failing their health checks.
    #[serde(default)]
    pub health_failures: i64,
    /// The fingerprint of the CreateService request that made the service: the same request
    /// again answers it, another one with its name is refused.
    #[serde(default)]
    pub request: String,
}

/// A task set (`TaskSet` in the model) as stored, without the counts derived from its tasks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskSetRecord {
    /// `ecs-svc/` and digits; its tasks say so in `startedBy`.
    pub id: String,
    pub task_set_arn: String,
    /// PRIMARY, ACTIVE or DRAINING (deleted, its tasks stopping).
    pub status: String,
    pub task_definition: String,
    pub launch_type: String,
    /// The percent of the service's desired count it runs.
    pub scale: f64,
    /// STABILIZING or STEADY_STATE.
    pub stability_status: String,
    pub stability_status_at: f64,
    pub created_at: f64,
    pub updated_at: f64,
    /// `externalId`, `networkConfiguration`, `loadBalancers`, `serviceRegistries`,
    /// `platformVersion`, `tags`: as the client set them.
    pub options: Map<String, Value>,
}

/// An account setting a principal (or, under the root ARN, the account) set explicitly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountSetting {
    pub name: String,
    pub value: String,
    /// The principal it applies to; the account's root ARN for the account default.
    pub principal_arn: String,
}

/// A service task's scale-in protection, until `expiration_date`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskProtection {
    pub task_arn: String,
    pub expiration_date: f64,
}

/// A capacity provider (`CapacityProvider` in the model) that a client created; FARGATE and
/// FARGATE_SPOT are not stored (they always exist).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CapacityProviderRecord {
    pub capacity_provider_arn: String,
    pub name: String,
    /// ACTIVE or INACTIVE.
    pub status: String,
    pub auto_scaling_group_provider: crate::shapes::AutoScalingGroupProvider,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_status_reason: Option<String>,
    pub tags: Vec<Tag>,
    /// What managed scaling keeps between passes; not part of the model's shape.
    #[serde(default)]
    pub scaler: ScalerState,
}

/// The Auto Scaling group of a capacity provider, as ecsd runs it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScalerState {
    /// The ids of the container instances ecsd launched for it.
    pub instances: Vec<String>,
    /// Since when it has had more instances than it needs.
    pub surplus_since: Option<f64>,
    /// Whether it had what it needed at the last pass.
    pub steady: bool,
}

/// A private address of a subnet held by the network interface of a task ecsd runs itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkAddress {
    pub subnet: String,
    /// Dotted IPv4.
    pub address: String,
    pub task_arn: String,
}

/// A signed-in session of the web console: the principal whose keys opened it (by access key,
/// so that a key taken out of the credentials file ends its sessions), the region it acts in,
/// until `expires_at`. Stored under the digest of its token, which only the browser holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsoleSession {
    /// SHA-256 of the token, hex.
    pub id: String,
    pub access_key_id: String,
    pub created_at: f64,
    pub expires_at: f64,
    /// Sent back with every state-changing request (the page reads it from the session, a
    /// page of another site cannot).
    pub csrf_token: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(members: Value) -> Task {
        let mut doc = serde_json::json!({
            "taskArn": "arn:aws:ecs:us-east-1:123456789012:task/c/0123",
            "clusterArn": "arn:aws:ecs:us-east-1:123456789012:cluster/c",
            "taskDefinitionArn": "arn:aws:ecs:us-east-1:123456789012:task-definition/f:1",
            "overrides": {}, "lastStatus": "PENDING", "desiredStatus": "RUNNING", "containers": [],
            "version": 1, "createdAt": 1.5, "attachments": [], "tags": [], "enableExecuteCommand": false,
        });
        doc.as_object_mut()
            .unwrap()
            .extend(members.as_object().unwrap().clone());
        serde_json::from_value(doc).unwrap()
    }

    #[test]
    fn a_stored_task_says_whether_it_is_tagged_by_how_its_text_ends() {
        let untagged = serde_json::to_string(&task(serde_json::json!({"enableExecuteCommand": true}))).unwrap();
        assert!(Task::untagged(&untagged), "{untagged}");
        // Members kept as the client sent them come before the tags.
        let fargate = serde_json::to_string(&task(serde_json::json!({"platformVersion": "1.4.0"}))).unwrap();
        assert!(Task::untagged(&fargate), "{fargate}");
        let tagged = serde_json::to_string(&task(serde_json::json!({"tags": [{"key": "a", "value": "1"}]}))).unwrap();
        assert!(!Task::untagged(&tagged), "{tagged}");
        // A member kept as the client sent it that ends as an untagged task does, in a tagged one.
        let lookalike = task(serde_json::json!({
            "tags": [{"key": "a", "value": "1"}],
            "zz": {"tags": [], "enableExecuteCommand": false},
        }));
        let lookalike = serde_json::to_string(&lookalike).unwrap();
        assert!(!Task::untagged(&lookalike), "{lookalike}");
        // Read back, a stored task renders as the very text it was stored as.
        let again = serde_json::to_string(&serde_json::from_str::<Task>(&lookalike).unwrap()).unwrap();
        assert_eq!(again, lookalike);
    }
}
