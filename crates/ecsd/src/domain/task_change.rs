//! How an agent's report changes a task: the rules of `SubmitTaskStateChange`, as a pure
//! function. Statuses only move forward, a report repeating what is known changes nothing, and
//! once a task is STOPPED nothing moves it again.

use super::records::{ManagedAgent, NetworkBinding, Task};
use super::status::{ContainerStatus, TaskStatus};
use crate::error::ApiError;
use crate::shapes::TransportProtocol;

/// The reports agents send, in the model's shapes (`SubmitTaskStateChangeRequest` and its
/// parts), already checked against the model.
pub use crate::shapes::{
    AttachmentStateChange as AttachmentReport, ContainerStateChange as ContainerReport,
    ManagedAgentStateChange as ManagedAgentReport, SubmitTaskStateChangeRequest as TaskStateReport,
};

const MAX_ID_LEN: usize = 255;
const MAX_REASON_LEN: usize = 1024;
const MAX_PORT_RANGES: usize = 100;
const ESSENTIAL_EXITED: &str = "Essential container in task exited";
/// The reason ECS gives a task that stopped before it ran, when the agent gives none.
const FAILED_TO_START: &str = "Task failed to start";
const ENI: &str = "ElasticNetworkInterface";
/// The statuses an attachment can be reported in.
const ATTACHMENT_STATUSES: [&str; 9] = [
    "PRECREATED",
    "CREATED",
    "ATTACHING",
    "ATTACHED",
    "DETACHING",
    "DETACHED",
    "DELETED",
    "FAILED",
    "NONE",
];

/// The task status its containers imply, for reports that carry only container changes
/// (SubmitContainerStateChange): STOPPED once every container stopped, RUNNING once every
/// essential container runs.
pub fn status_from_containers(task: &Task, essential: impl Fn(&str) -> bool) -> Option<TaskStatus> {
    if task
        .containers
        .iter()
        .all(|c| c.last_status == ContainerStatus::Stopped)
    {
        Some(TaskStatus::Stopped)
    } else if task
        .containers
        .iter()
        .filter(|c| essential(&c.name))
        .all(|c| c.last_status >= ContainerStatus::Running)
    {
        Some(TaskStatus::Running)
    } else {
        None
    }
}

fn check_len(value: &Option<String>, max: usize, member: &str) -> Result<(), ApiError> {
    match value {
        Some(v) if v.len() > max => Err(ApiError::invalid_parameter(format!(
            "'{member}' must be at most {max} bytes long."
        ))),
        _ => Ok(()),
    }
}

/// Applies `report` to `task` at time `now`. `essential` tells whether a container (by name) is
/// essential in the task definition. On an invalid report the task is left as it was and the
/// error names the offending member; the caller compares before and after to tell whether
/// anything changed.
pub fn apply(
    task: &mut Task,
    report: &TaskStateReport,
    essential: impl Fn(&str) -> bool,
    now: f64,
) -> Result<(), ApiError> {
    let status = report
        .status
        .as_deref()
        .map(|s| {
            TaskStatus::from_agent(s).ok_or_else(|| {
                ApiError::invalid_parameter(format!(
                    "Invalid value '{s}' for 'status'; valid values are: PENDING, RUNNING, STOPPED."
                ))
            })
        })
        .transpose()?;
    check_len(&report.reason, MAX_REASON_LEN, "reason")?;
    let mut containers = Vec::with_capacity(report.containers.as_deref().unwrap_or_default().len());
    for (i, c) in report.containers.iter().flatten().enumerate() {
        let member = |m: &str| format!("containers[{i}].{m}");
        let name = c.container_name.as_deref().ok_or_else(|| {
            ApiError::invalid_parameter(format!("Missing required parameter '{}'.", member("containerName")))
        })?;
        let index = task.containers.iter().position(|k| k.name == name).ok_or_else(|| {
            ApiError::invalid_parameter(format!(
                "Invalid '{}': the task has no container named '{name}'.",
                member("containerName")
            ))
        })?;
        let status = c
            .status
            .as_deref()
            .map(|s| {
                ContainerStatus::from_agent(s).ok_or_else(|| {
                    ApiError::invalid_parameter(format!(
                        "Invalid value '{s}' for '{}'; valid values are: PENDING, RUNNING, STOPPED.",
                        member("status")
                    ))
                })
            })
            .transpose()?;
        check_len(&c.runtime_id, MAX_ID_LEN, &member("runtimeId"))?;
        check_len(&c.image_digest, MAX_ID_LEN, &member("imageDigest"))?;
        check_len(&c.reason, MAX_REASON_LEN, &member("reason"))?;
        if let Some(bindings) = &c.network_bindings {
            check_bindings(bindings, &member("networkBindings"))?;
        }
        containers.push((index, status, c));
    }
    let mut agents = Vec::with_capacity(report.managed_agents.as_deref().unwrap_or_default().len());
    for (i, a) in report.managed_agents.iter().flatten().enumerate() {
        let index = task
            .containers
            .iter()
            .position(|k| k.name == a.container_name)
            .ok_or_else(|| {
                ApiError::invalid_parameter(format!(
                    "Invalid 'managedAgents[{i}].containerName': the task has no container named '{}'.",
                    a.container_name
                ))
            })?;
        // The model allows only ExecuteCommandAgent, and the request was checked against it.
        check_len(&a.reason, MAX_REASON_LEN, &format!("managedAgents[{i}].reason"))?;
        agents.push((index, a));
    }
    let mut attachments = Vec::with_capacity(report.attachments.as_deref().unwrap_or_default().len());
    for (i, a) in report.attachments.iter().flatten().enumerate() {
        if !ATTACHMENT_STATUSES.contains(&a.status.as_str()) {
            return Err(ApiError::invalid_parameter(format!(
                "Invalid value '{}' for 'attachments[{i}].status'; valid values are: {}.",
                a.status,
                ATTACHMENT_STATUSES.join(", ")
            )));
        }
        let id = a.attachment_arn.rsplit('/').next().unwrap_or_default();
        let index = task.attachments.iter().position(|k| k.id == id).ok_or_else(|| {
            ApiError::invalid_parameter(format!(
                "Invalid 'attachments[{i}].attachmentArn': the task has no attachment '{}'.",
                a.attachment_arn
            ))
        })?;
        attachments.push((index, a));
    }

    if task.last_status == TaskStatus::Stopped {
        return Ok(());
    }
    if task.connectivity.is_none() {
        task.connectivity = Some("CONNECTED".into());
        task.connectivity_at = Some(now);
    }
    for (index, status, c) in containers {
        let container = &mut task.containers[index];
        if let Some(status) = status {
            // A report older than what is known (delivered out of order) changes nothing of
            // this container, not even the fields it carries.
            if status < container.last_status {
                continue;
            }
            container.last_status = status;
        }
        set(&mut container.runtime_id, &c.runtime_id);
        set(&mut container.image_digest, &c.image_digest);
        set(&mut container.reason, &c.reason);
        if c.exit_code.is_some() {
            container.exit_code = c.exit_code;
        }
        if let Some(bindings) = &c.network_bindings {
            container.network_bindings = bindings.clone();
        }
    }
    for (index, a) in agents {
        let container = &mut task.containers[index];
        let agent = match container
            .managed_agents
            .iter_mut()
            .position(|m| m.name == a.managed_agent_name.as_str())
        {
            Some(i) => &mut container.managed_agents[i],
            None => {
                container.managed_agents.push(ManagedAgent {
                    name: a.managed_agent_name.as_str().to_owned(),
                    last_status: None,
                    reason: None,
                    last_started_at: None,
                });
                container.managed_agents.last_mut().expect("just pushed")
            }
        };
        if a.status == "RUNNING" && agent.last_status.as_deref() != Some("RUNNING") {
            agent.last_started_at = Some(now);
        }
        agent.last_status = Some(a.status.clone());
        set(&mut agent.reason, &a.reason);
    }
    for (index, a) in attachments {
        task.attachments[index].status = a.status.clone();
    }
    // An awsvpc task leaves PROVISIONING once its network interface is attached.
    let enis = || task.attachments.iter().filter(|a| a.kind == ENI);
    if task.last_status == TaskStatus::Provisioning && enis().next().is_some() && enis().all(|a| a.status == "ATTACHED")
    {
        task.last_status = TaskStatus::Pending;
    }
    set_time(&mut task.pull_started_at, report.pull_started_at);
    set_time(&mut task.pull_stopped_at, report.pull_stopped_at);
    set_time(&mut task.execution_stopped_at, report.execution_stopped_at);

    let Some(status) = status.filter(|s| *s > task.last_status) else {
        return Ok(());
    };
    task.last_status = status;
    if status >= TaskStatus::Running && task.started_at.is_none() && status != TaskStatus::Stopped {
        task.started_at = Some(now);
    }
    if status == TaskStatus::Stopped {
        stop(task, report.reason.as_deref(), &essential, now);
    }
    Ok(())
}

/// The derived state of a task that reached STOPPED: its containers stopped, its times set, and
/// why it stopped, unless someone (StopTask) already said why.
fn stop(task: &mut Task, reason: Option<&str>, essential: &impl Fn(&str) -> bool, now: f64) {
    task.desired_status = TaskStatus::Stopped;
    task.stopping_at.get_or_insert(now);
    task.stopped_at = Some(now);
    task.execution_stopped_at.get_or_insert(now);
    for container in &mut task.containers {
        container.last_status = ContainerStatus::Stopped;
    }
    if task.stop_code.is_some() {
        return;
    }
    let essential_exited = task
        .containers
        .iter()
        .any(|c| c.exit_code.is_some() && essential(&c.name));
    if task.started_at.is_none() {
        task.stop_code = Some("TaskFailedToStart".into());
        // The agent usually gives no task reason (each container carries its own); ECS then
        // says only that the task failed to start.
        task.stopped_reason = Some(reason.filter(|r| !r.is_empty()).unwrap_or(FAILED_TO_START).to_owned());
    } else if essential_exited {
        task.stop_code = Some("EssentialContainerExited".into());
        task.stopped_reason = Some(ESSENTIAL_EXITED.into());
    } else if let Some(reason) = reason.filter(|r| !r.is_empty()) {
        task.stopped_reason = Some(reason.to_owned());
    }
}

fn set(field: &mut Option<String>, value: &Option<String>) {
    if let Some(v) = value.as_ref().filter(|v| !v.is_empty()) {
        *field = Some(v.clone());
    }
}

fn set_time(field: &mut Option<f64>, value: Option<f64>) {
    if value.is_some() {
        *field = value;
    }
}

fn parse_range(text: &str) -> Option<(u16, u16)> {
    let (a, b) = text.split_once('-')?;
    let a: u16 = a.trim().parse().ok()?;
    let b: u16 = b.trim().parse().ok()?;
    (a >= 1 && a < b).then_some((a, b))
}

/// The rules the API documents for a container's network bindings.
fn check_bindings(bindings: &[NetworkBinding], member: &str) -> Result<(), ApiError> {
    let invalid = |i: usize, what: &str| ApiError::invalid_parameter(format!("Invalid '{member}[{i}]': {what}"));
    let mut used: Vec<(TransportProtocol, u16, u16)> = Vec::new();
    let mut ranges = 0;
    for (i, b) in bindings.iter().enumerate() {
        let protocol = b.protocol.unwrap_or(TransportProtocol::Tcp);
        for (name, port) in [("containerPort", b.container_port), ("hostPort", b.host_port)] {
            if let Some(p) = port.filter(|p| !(1..=65535).contains(p)) {
                return Err(invalid(i, &format!("{name} {p} is outside 1-65535.")));
            }
        }
        let span = match (&b.container_port_range, &b.host_port_range) {
            (Some(range), host) => {
                ranges += 1;
                let (first, last) = parse_range(range).ok_or_else(|| {
                    invalid(
                        i,
                        &format!("containerPortRange '{range}' must be 'first-last' with 1 <= first < last <= 65535."),
                    )
                })?;
                if let Some(host) = host {
                    parse_range(host).ok_or_else(|| {
                        invalid(
                            i,
                            &format!("hostPortRange '{host}' must be 'first-last' with 1 <= first < last <= 65535."),
                        )
                    })?;
                }
                if b.container_port.is_some() {
                    return Err(invalid(i, "containerPort and containerPortRange cannot both be set."));
                }
                (first, last)
            }
            (None, Some(_)) => return Err(invalid(i, "hostPortRange is only valid with a containerPortRange.")),
            (None, None) => match b.container_port {
                Some(p) => (p as u16, p as u16),
                None => continue,
            },
        };
        if let Some((_, a, z)) = used
            .iter()
            .find(|(proto, a, z)| *proto == protocol && span.0 <= *z && *a <= span.1)
        {
            return Err(invalid(
                i,
                &format!("ports {}-{} overlap ports {a}-{z} of another binding.", span.0, span.1),
            ));
        }
        used.push((protocol, span.0, span.1));
    }
    if ranges > MAX_PORT_RANGES {
        return Err(ApiError::invalid_parameter(format!(
            "Invalid '{member}': at most {MAX_PORT_RANGES} port ranges are allowed per container."
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::records::{Attachment, Container};
    use crate::error::ErrorCode;
    use serde_json::json;

    fn task() -> Task {
        let container = |name: &str| Container {
            container_arn: format!("arn:c/{name}"),
            task_arn: "arn:t".into(),
            name: name.into(),
            image: Some("nginx".into()),
            image_digest: None,
            runtime_id: None,
            last_status: ContainerStatus::Pending,
            exit_code: None,
            reason: None,
            network_bindings: vec![],
            network_interfaces: vec![],
            health_status: None,
            managed_agents: vec![],
            cpu: None,
            memory: None,
            memory_reservation: None,
        };
        Task {
            task_arn: "arn:aws:ecs:us-east-1:1:task/c/t1".into(),
            cluster_arn: "arn:aws:ecs:us-east-1:1:cluster/c".into(),
            task_definition_arn: "arn:td".into(),
            container_instance_arn: None,
            overrides: json!({}),
            last_status: TaskStatus::Pending,
            desired_status: TaskStatus::Running,
            cpu: None,
            memory: None,
            containers: vec![container("web"), container("log")],
            started_by: None,
            version: 1,
            stopped_reason: None,
            stop_code: None,
            connectivity: None,
            connectivity_at: None,
            pull_started_at: None,
            pull_stopped_at: None,
            execution_stopped_at: None,
            created_at: 1.0,
            started_at: None,
            stopping_at: None,
            stopped_at: None,
            group: None,
            launch_type: None,
            attachments: vec![Attachment {
                id: "eni1".into(),
                kind: "ElasticNetworkInterface".into(),
                status: "PRECREATED".into(),
                details: vec![],
            }],
            health_status: None,
            tags: vec![],
            enable_execute_command: false,
            extra: Default::default(),
        }
    }

    fn report(v: serde_json::Value) -> TaskStateReport {
        serde_json::from_value(v).unwrap()
    }

    fn essential(name: &str) -> bool {
        name == "web"
    }

    #[test]
    fn running_sets_started_at_and_records_containers() {
        let mut t = task();
        let r = report(
            json!({"status": "RUNNING", "containers": [{"containerName": "web", "status": "RUNNING",
            "runtimeId": "abc", "networkBindings": [{"bindIP": "0.0.0.0", "containerPort": 80, "hostPort": 32768, "protocol": "tcp"}]}]}),
        );
        apply(&mut t, &r, essential, 5.0).unwrap();
        assert_eq!(t.last_status, TaskStatus::Running);
        assert_eq!(t.started_at, Some(5.0));
        assert_eq!(t.connectivity.as_deref(), Some("CONNECTED"));
        assert_eq!(t.containers[0].last_status, ContainerStatus::Running);
        assert_eq!(t.containers[0].runtime_id.as_deref(), Some("abc"));
        assert_eq!(t.containers[0].network_bindings[0].host_port, Some(32768));
        assert_eq!(t.containers[1].last_status, ContainerStatus::Pending);
    }

    #[test]
    fn repeats_and_lower_statuses_change_nothing() {
        let mut t = task();
        let r = report(json!({"status": "RUNNING", "containers": [{"containerName": "web", "status": "RUNNING"}]}));
        apply(&mut t, &r, essential, 5.0).unwrap();
        let before = t.clone();
        apply(&mut t, &r, essential, 9.0).unwrap();
        assert_eq!(t, before);
        apply(
            &mut t,
            &report(json!({"status": "PENDING", "containers": [{"containerName": "web", "status": "PENDING"}]})),
            essential,
            9.0,
        )
        .unwrap();
        assert_eq!(t, before);
    }

    #[test]
    fn a_stale_container_report_does_not_overwrite_newer_fields() {
        let mut t = task();
        let running = report(
            json!({"status": "RUNNING", "containers": [{"containerName": "web", "status": "RUNNING",
            "networkBindings": [{"containerPort": 80, "hostPort": 32768}]}]}),
        );
        apply(&mut t, &running, essential, 5.0).unwrap();
        let stale =
            report(json!({"containers": [{"containerName": "web", "status": "PENDING", "networkBindings": []}]}));
        let before = t.clone();
        apply(&mut t, &stale, essential, 6.0).unwrap();
        assert_eq!(t, before);
    }

    #[test]
    fn stopped_derives_the_stop_state() {
        let mut t = task();
        apply(&mut t, &report(json!({"status": "RUNNING"})), essential, 5.0).unwrap();
        let r = report(json!({"status": "STOPPED", "executionStoppedAt": 7.5,
            "containers": [{"containerName": "web", "status": "STOPPED", "exitCode": 3}]}));
        apply(&mut t, &r, essential, 8.0).unwrap();
        assert_eq!(t.last_status, TaskStatus::Stopped);
        assert_eq!(t.desired_status, TaskStatus::Stopped);
        assert_eq!(t.stopped_at, Some(8.0));
        assert_eq!(t.execution_stopped_at, Some(7.5));
        assert_eq!(t.stop_code.as_deref(), Some("EssentialContainerExited"));
        assert_eq!(t.stopped_reason.as_deref(), Some(ESSENTIAL_EXITED));
        assert!(t.containers.iter().all(|c| c.last_status == ContainerStatus::Stopped));
        let after = t.clone();
        apply(
            &mut t,
            &report(json!({"status": "RUNNING", "containers": [{"containerName": "web", "exitCode": 9}]})),
            essential,
            9.0,
        )
        .unwrap();
        assert_eq!(t, after, "nothing moves a stopped task");
    }

    #[test]
    fn stopped_without_running_failed_to_start() {
        let mut t = task();
        apply(
            &mut t,
            &report(json!({"status": "STOPPED", "reason": "CannotPullContainerError"})),
            essential,
            3.0,
        )
        .unwrap();
        assert_eq!(t.stop_code.as_deref(), Some("TaskFailedToStart"));
        assert_eq!(t.stopped_reason.as_deref(), Some("CannotPullContainerError"));
        assert_eq!(t.started_at, None);

        let mut t = task();
        let pull_failed = json!({"status": "STOPPED", "containers": [
            {"containerName": "web", "status": "STOPPED", "reason": "CannotPullContainerError: no such image"}]});
        apply(&mut t, &report(pull_failed), essential, 3.0).unwrap();
        assert_eq!(t.stop_code.as_deref(), Some("TaskFailedToStart"));
        assert_eq!(t.stopped_reason.as_deref(), Some(FAILED_TO_START));
        assert_eq!(
            t.containers[0].reason.as_deref(),
            Some("CannotPullContainerError: no such image"),
            "each container keeps its own reason"
        );
    }

    #[test]
    fn invalid_reports_name_the_member_and_change_nothing() {
        let cases = [
            (json!({"status": "STOPPING"}), "'status'"),
            (
                json!({"containers": [{"containerName": "nope"}]}),
                "containers[0].containerName",
            ),
            (
                json!({"containers": [{"containerName": "web", "status": "EXITED"}]}),
                "containers[0].status",
            ),
            (
                json!({"containers": [{"containerName": "web", "runtimeId": "x".repeat(256)}]}),
                "containers[0].runtimeId",
            ),
            (
                json!({"containers": [{"containerName": "web", "networkBindings": [{"containerPort": 0}]}]}),
                "networkBindings[0]",
            ),
            (
                json!({"containers": [{"containerName": "web", "networkBindings": [{"containerPortRange": "90-80"}]}]}),
                "networkBindings[0]",
            ),
            (
                json!({"containers": [{"containerName": "web", "networkBindings": [{"hostPortRange": "1-2"}]}]}),
                "networkBindings[0]",
            ),
            (
                json!({"containers": [{"containerName": "web", "networkBindings": [
                {"containerPortRange": "80-90"}, {"containerPortRange": "85-95"}]}]}),
                "networkBindings[1]",
            ),
            (
                json!({"containers": [{"containerName": "web", "networkBindings": [
                {"containerPort": 80}, {"containerPort": 80}]}]}),
                "networkBindings[1]",
            ),
            (
                json!({"attachments": [{"attachmentArn": "arn:x/eni9", "status": "ATTACHED"}]}),
                "attachments[0]",
            ),
            // An unknown managedAgentName is refused by the model check, before these rules.
            (json!({"status": "RUNNING", "reason": "r".repeat(1025)}), "'reason'"),
        ];
        for (body, member) in cases {
            let mut t = task();
            let err = apply(&mut t, &report(body.clone()), essential, 1.0).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidParameterException, "{body}");
            assert!(err.message.contains(member), "{body}: {}", err.message);
            assert_eq!(t, task(), "{body}");
        }
    }

    #[test]
    fn the_same_port_may_be_bound_for_tcp_and_udp() {
        let mut t = task();
        let r = report(json!({"containers": [{"containerName": "web", "networkBindings": [
            {"containerPort": 53, "protocol": "tcp"}, {"containerPort": 53, "protocol": "udp"}]}]}));
        apply(&mut t, &r, essential, 1.0).unwrap();
        assert_eq!(t.containers[0].network_bindings.len(), 2);
    }

    #[test]
    fn an_attached_eni_ends_provisioning() {
        let mut t = task();
        t.last_status = TaskStatus::Provisioning;
        let r = report(
            json!({"attachments": [{"attachmentArn": "arn:aws:ecs:us-east-1:1:attachment/eni1", "status": "ATTACHING"}]}),
        );
        apply(&mut t, &r, essential, 1.0).unwrap();
        assert_eq!(t.last_status, TaskStatus::Provisioning);
        let r = report(
            json!({"attachments": [{"attachmentArn": "arn:aws:ecs:us-east-1:1:attachment/eni1", "status": "ATTACHED"}]}),
        );
        apply(&mut t, &r, essential, 2.0).unwrap();
        assert_eq!(t.last_status, TaskStatus::Pending);
        let bad = report(
            json!({"attachments": [{"attachmentArn": "arn:aws:ecs:us-east-1:1:attachment/eni1", "status": "GLUED"}]}),
        );
        assert!(apply(&mut t, &bad, essential, 3.0).is_err());
    }

    #[test]
    fn container_changes_imply_the_task_status() {
        let mut t = task();
        assert_eq!(status_from_containers(&t, essential), None);
        t.containers[0].last_status = ContainerStatus::Running;
        assert_eq!(
            status_from_containers(&t, essential),
            Some(TaskStatus::Running),
            "only 'web' is essential"
        );
        t.containers[0].last_status = ContainerStatus::Stopped;
        assert_eq!(
            status_from_containers(&t, essential),
            Some(TaskStatus::Running),
            "it ran before it stopped"
        );
        t.containers[1].last_status = ContainerStatus::Stopped;
        assert_eq!(status_from_containers(&t, essential), Some(TaskStatus::Stopped));
    }

    #[test]
    fn attachments_and_managed_agents_are_recorded() {
        let mut t = task();
        let r = report(
            json!({"attachments": [{"attachmentArn": "arn:aws:ecs:us-east-1:1:attachment/eni1", "status": "ATTACHED"}],
            "managedAgents": [{"containerName": "web", "managedAgentName": "ExecuteCommandAgent", "status": "RUNNING"}]}),
        );
        apply(&mut t, &r, essential, 4.0).unwrap();
        assert_eq!(t.attachments[0].status, "ATTACHED");
        assert_eq!(t.last_status, TaskStatus::Pending);
        let agent = &t.containers[0].managed_agents[0];
        assert_eq!(
            (agent.last_status.as_deref(), agent.last_started_at),
            (Some("RUNNING"), Some(4.0))
        );
    }
}
