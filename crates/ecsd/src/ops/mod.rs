//! The ECS operations: one module per resource family, one async function per operation.
//! Handlers know the domain, not HTTP: they take the request shape and return the response
//! shape or an [`ApiError`].
//!
//! The operation table below is the single list of what ecsd implements; the wire names, the
//! dispatch and the model check all derive from it.

pub mod acs;
pub mod agent;
pub mod capacity_providers;
pub mod clusters;
pub mod container_instances;
pub mod fargate;
pub mod protection;
pub mod scaling;
pub mod services;
pub mod settings;
pub mod tags;
pub mod task_definitions;
pub mod tasks;
pub mod tcs;

use std::sync::Arc;

use base64::Engine;
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::auth::Principal;
use crate::domain::records::{Cluster, ClusterState};
use crate::domain::status::ClusterStatus;
use crate::domain::Scope;
use crate::error::ApiError;
use crate::shapes::{self, Failure, OperationShapes};
use crate::store::{ReadAhead, Store, StoreError, StoreExt, Tx};
use crate::throttle::Family;

/// What a handler works with: the store, the scope (account and region) of the caller, the
/// URL agents reach this server at, and the calling principal (whose clusters a listing shows).
pub struct Ctx {
    pub store: Arc<dyn Store>,
    pub scope: Scope,
    pub advertise_url: Arc<str>,
    pub principal: Arc<Principal>,
}

macro_rules! operations {
    ($($name:ident($family:ident) => $module:ident::$handler:ident,)*) => {
        /// Every operation ecsd answers.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Operation {
            $($name,)*
        }

        impl Operation {
            pub const ALL: &'static [Operation] = &[$(Operation::$name,)*];

            /// The name in `X-Amz-Target` and in the model.
            pub fn name(self) -> &'static str {
                match self {
                    $(Operation::$name => stringify!($name),)*
                }
            }

            /// The bucket family it is throttled in.
            pub fn family(self) -> Family {
                match self {
                    $(Operation::$name => Family::$family,)*
                }
            }

            pub fn from_name(name: &str) -> Option<Operation> {
                match name {
                    $(stringify!($name) => Some(Operation::$name),)*
                    _ => None,
                }
            }

            /// Runs the operation on a request already checked against the model; its output as
            /// JSON text.
            pub async fn call(self, ctx: &Ctx, input: Value) -> Result<String, ApiError> {
                match self {
                    $(Operation::$name => {
                        // The model's shapes, so a handler cannot take or give anything else.
                        let request: <shapes::operation::$name as OperationShapes>::Input = serde_json::from_value(input)
                            .map_err(|e| ApiError::serialization(format!("Unable to read the request: {e}")))?;
                        let response: <shapes::operation::$name as OperationShapes>::Output =
                            $module::$handler(ctx, request).await?;
                        serde_json::to_string(&response)
                            .map_err(|e| ApiError::server(format!("Unable to write the response: {e}")))
                    })*
                }
            }
        }
    };
}

operations! {
    CreateCluster(Write) => clusters::create_cluster,
    DescribeClusters(Read) => clusters::describe_clusters,
    ListClusters(Read) => clusters::list_clusters,
    UpdateCluster(Write) => clusters::update_cluster,
    UpdateClusterSettings(Write) => clusters::update_cluster_settings,
    DeleteCluster(Write) => clusters::delete_cluster,
    RegisterTaskDefinition(Write) => task_definitions::register_task_definition,
    DescribeTaskDefinition(Read) => task_definitions::describe_task_definition,
    ListTaskDefinitions(Read) => task_definitions::list_task_definitions,
    ListTaskDefinitionFamilies(Read) => task_definitions::list_task_definition_families,
    DeregisterTaskDefinition(Write) => task_definitions::deregister_task_definition,
    DeleteTaskDefinitions(Write) => task_definitions::delete_task_definitions,
    RegisterContainerInstance(Agent) => container_instances::register_container_instance,
    DeregisterContainerInstance(Agent) => container_instances::deregister_container_instance,
    DescribeContainerInstances(Read) => container_instances::describe_container_instances,
    ListContainerInstances(Read) => container_instances::list_container_instances,
    UpdateContainerInstancesState(Write) => container_instances::update_container_instances_state,
    PutAttributes(Write) => container_instances::put_attributes,
    DeleteAttributes(Write) => container_instances::delete_attributes,
    ListAttributes(Read) => container_instances::list_attributes,
    RunTask(Write) => tasks::run_task,
    StartTask(Write) => tasks::start_task,
    StopTask(Write) => tasks::stop_task,
    DescribeTasks(Read) => tasks::describe_tasks,
    ListTasks(Read) => tasks::list_tasks,
    CreateService(Write) => services::create_service,
    UpdateService(Write) => services::update_service,
    DeleteService(Write) => services::delete_service,
    DescribeServices(Read) => services::describe_services,
    ListServices(Read) => services::list_services,
    ListServicesByNamespace(Read) => services::list_services_by_namespace,
    ListServiceDeployments(Read) => services::list_service_deployments,
    DescribeServiceDeployments(Read) => services::describe_service_deployments,
    DescribeServiceRevisions(Read) => services::describe_service_revisions,
    StopServiceDeployment(Write) => services::stop_service_deployment,
    CreateTaskSet(Write) => services::create_task_set,
    UpdateTaskSet(Write) => services::update_task_set,
    DeleteTaskSet(Write) => services::delete_task_set,
    DescribeTaskSets(Read) => services::describe_task_sets,
    UpdateServicePrimaryTaskSet(Write) => services::update_service_primary_task_set,
    CreateCapacityProvider(Write) => capacity_providers::create_capacity_provider,
    UpdateCapacityProvider(Write) => capacity_providers::update_capacity_provider,
    DeleteCapacityProvider(Write) => capacity_providers::delete_capacity_provider,
    DescribeCapacityProviders(Read) => capacity_providers::describe_capacity_providers,
    PutClusterCapacityProviders(Write) => capacity_providers::put_cluster_capacity_providers,
    UpdateTaskProtection(Write) => protection::update_task_protection,
    GetTaskProtection(Read) => protection::get_task_protection,
    PutAccountSetting(Write) => settings::put_account_setting,
    PutAccountSettingDefault(Write) => settings::put_account_setting_default,
    DeleteAccountSetting(Write) => settings::delete_account_setting,
    ListAccountSettings(Read) => settings::list_account_settings,
    TagResource(Write) => tags::tag_resource,
    UntagResource(Write) => tags::untag_resource,
    ListTagsForResource(Read) => tags::list_tags_for_resource,
    SubmitTaskStateChange(Agent) => agent::submit_task_state_change,
    SubmitContainerStateChange(Agent) => agent::submit_container_state_change,
    SubmitAttachmentStateChanges(Agent) => agent::submit_attachment_state_changes,
    DiscoverPollEndpoint(Agent) => agent::discover_poll_endpoint,
}

impl Operation {
    /// The IAM action that permits it.
    pub fn action(self) -> String {
        format!("ecs:{}", self.name())
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        ApiError::internal(format!("store: {err}"))
    }
}

/// A fingerprint of what a request asks for: a digest of every member but its idempotency
/// token (`clientToken`), with object members in sorted order so that the same request always
/// gives the same fingerprint. Two requests with one token ask for the same thing exactly when
/// their fingerprints match.
pub fn fingerprint(request: &impl Serialize) -> String {
    let mut value = serde_json::to_value(request).unwrap_or(Value::Null);
    if let Some(members) = value.as_object_mut() {
        members.remove("clientToken");
    }
    let mut digest = Sha256::new();
    canonical(&value, &mut digest);
    digest.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A request's members as JSON, but those named in `except`: what ecsd keeps of members it
/// stores without interpreting them.
fn members(request: &impl Serialize, except: &[&str]) -> Map<String, Value> {
    let mut members = match serde_json::to_value(request) {
        Ok(Value::Object(members)) => members,
        _ => Map::new(),
    };
    members.retain(|k, _| !except.contains(&k.as_str()));
    members
}

/// Feeds `value` to the digest as JSON with every object's members in sorted order.
fn canonical(value: &Value, digest: &mut Sha256) {
    match value {
        Value::Object(members) => {
            let mut keys: Vec<&String> = members.keys().collect();
            keys.sort_unstable();
            digest.update(b"{");
            for key in keys {
                digest.update(Value::from(key.as_str()).to_string().as_bytes());
                digest.update(b":");
                canonical(&members[key], digest);
                digest.update(b",");
            }
            digest.update(b"}");
        }
        Value::Array(items) => {
            digest.update(b"[");
            for item in items {
                canonical(item, digest);
                digest.update(b",");
            }
            digest.update(b"]");
        }
        scalar => digest.update(scalar.to_string().as_bytes()),
    }
}

/// Runs `f` as a write bound to the cluster `reference` names (`default` if none): it waits for
/// no write to another cluster, and may reach no other ([`crate::store::Hold::Cluster`]). A
/// reference that names no cluster of the scope is the ClusterNotFoundException that
/// [`active_cluster`] would find. `ahead` names what the write will read, given the scope and
/// the cluster's name ([`ReadAhead`]).
async fn write_in_cluster<R, F>(
    ctx: &Ctx,
    reference: Option<&str>,
    ahead: impl FnOnce(&Scope, &str) -> Vec<ReadAhead>,
    f: F,
) -> Result<R, ApiError>
where
    F: FnOnce(&mut Tx<'_>) -> Result<R, ApiError> + Send + 'static,
    R: Send + 'static,
{
    let Some(cluster) = ctx.scope.cluster_name(reference.unwrap_or("default")) else {
        return Err(ApiError::cluster_not_found());
    };
    ctx.store
        .write_in_reading(&ctx.scope, cluster, ahead(&ctx.scope, cluster), f)
        .await
}

/// The cluster a request names (`default` when it names none), if it exists and is ACTIVE.
fn active_cluster(tx: &mut Tx<'_>, reference: Option<&str>) -> Result<String, ApiError> {
    let reference = reference.unwrap_or("default");
    let name = tx
        .scope()
        .cluster_name(reference)
        .ok_or_else(ApiError::cluster_not_found)?
        .to_owned();
    match tx.get_as::<Cluster, ClusterState>(&[name.as_str().into()])? {
        Some(c) if c.status == ClusterStatus::Active => Ok(name),
        _ => Err(ApiError::cluster_not_found()),
    }
}

/// A `Failure` of a batch operation: which resource, and why.
fn failure(arn: &str, reason: &str) -> Failure {
    Failure {
        arn: Some(arn.to_owned()),
        reason: Some(reason.to_owned()),
        detail: None,
    }
}

/// The ARN a reference stands for: itself if it is one, else the ARN `build` makes of the short
/// name or id (what a failure names).
fn arn_for(reference: &str, build: impl FnOnce(&str) -> String) -> String {
    if reference.starts_with("arn:") {
        reference.to_owned()
    } else {
        build(reference)
    }
}

/// Page size for list operations: `maxResults` within 1..=100, 100 when absent.
fn page_size(max_results: Option<i32>) -> Result<usize, ApiError> {
    match max_results {
        None => Ok(100),
        Some(n @ 1..=100) => Ok(n as usize),
        Some(n) => Err(ApiError::invalid_parameter(format!(
            "Invalid value {n} for 'maxResults'; it must be between 1 and 100."
        ))),
    }
}

/// One page of a list operation: how many to show, where the client's token resumes, and the
/// token for the next page. Lists fetch `fetch()` items (one more than they show) so that a
/// full last page gives no token.
pub(crate) struct Page {
    kind: &'static str,
    pub limit: usize,
    /// The last key of the previous page.
    pub after: Option<String>,
}

impl Page {
    /// The page `max_results` and `next_token` ask for, of the list `kind` (tokens of one list
    /// are refused by another).
    pub fn new(kind: &'static str, max_results: Option<i32>, next_token: Option<&str>) -> Result<Page, ApiError> {
        Ok(Page {
            kind,
            limit: page_size(max_results)?,
            after: decode_token(kind, next_token)?,
        })
    }

    /// How many items to fetch.
    pub fn fetch(&self) -> usize {
        self.limit + 1
    }

    /// The items to show of those fetched, and the token that resumes after the last of them.
    pub fn finish<T>(&self, items: Vec<T>, key: impl Fn(&T) -> String) -> (Vec<T>, Option<String>) {
        paginate(items, self.limit, self.kind, key)
    }
}

/// Pagination tokens are opaque to clients: the kind of list and the last key shown.
fn encode_token(kind: &str, last_key: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{kind}\n{last_key}"))
}

fn decode_token(kind: &str, token: Option<&str>) -> Result<Option<String>, ApiError> {
    let Some(token) = token else {
        return Ok(None);
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.strip_prefix(&format!("{kind}\n")).map(str::to_owned))
        .map(Some)
        .ok_or_else(|| ApiError::invalid_parameter("Invalid 'nextToken': it was not issued for this request."))
}

/// A page of `items` fetched with one extra row: the token resumes after the last one shown.
fn paginate<T>(mut items: Vec<T>, limit: usize, kind: &str, key: impl Fn(&T) -> String) -> (Vec<T>, Option<String>) {
    if items.len() > limit {
        items.truncate(limit);
        let token = items.last().map(|last| encode_token(kind, &key(last)));
        (items, token)
    } else {
        (items, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Model;

    #[test]
    fn the_operation_table_and_the_embedded_model_agree() {
        let mut table: Vec<&str> = Operation::ALL.iter().map(|o| o.name()).collect();
        let mut model: Vec<&str> = Model::get().operation_names().collect();
        table.sort_unstable();
        model.sort_unstable();
        assert_eq!(table, model, "run tools/gen-model.py with the operations in the table");
        for op in Operation::ALL {
            assert_eq!(Operation::from_name(op.name()), Some(*op));
            let read = ["Describe", "List", "Get"].iter().any(|p| op.name().starts_with(p));
            assert_eq!(op.family() == Family::Read, read, "{}", op.name());
        }
    }

    #[test]
    fn tokens_round_trip_and_are_bound_to_their_list() {
        let token = encode_token("clusters", "prod");
        assert_eq!(decode_token("clusters", Some(&token)).unwrap().as_deref(), Some("prod"));
        assert!(decode_token("tasks", Some(&token)).is_err());
        assert!(decode_token("clusters", Some("%%%")).is_err());
        assert_eq!(decode_token("clusters", None).unwrap(), None);
    }

    #[test]
    fn fingerprints_ignore_the_token_and_member_order() {
        let print = |v: Value| fingerprint(&v);
        let a = print(
            serde_json::json!({"taskDefinition": "web", "count": 2, "clientToken": "t1",
                                         "overrides": {"b": 1, "a": [1, 2]}}),
        );
        let b = print(
            serde_json::json!({"overrides": {"a": [1, 2], "b": 1}, "clientToken": "t2",
                                         "count": 2, "taskDefinition": "web"}),
        );
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
        assert_ne!(
            a,
            print(
                serde_json::json!({"taskDefinition": "web", "count": 3, "clientToken": "t1",
                                               "overrides": {"b": 1, "a": [1, 2]}})
            )
        );
        assert_ne!(
            print(serde_json::json!({"a": [1, 2]})),
            print(serde_json::json!({"a": [2, 1]})),
            "order within a list matters"
        );
    }

    #[test]
    fn page_sizes_are_bounded() {
        assert_eq!(page_size(None).unwrap(), 100);
        assert_eq!(page_size(Some(5)).unwrap(), 5);
        assert!(page_size(Some(0)).is_err());
        assert!(page_size(Some(101)).is_err());
    }
}
