//! The sequences a real ECS agent produces, replayed with the real `aws-sdk-ecs` client, and
//! every field of DescribeTasks checked afterwards.

mod common;

use aws_sdk_ecs::primitives::DateTime;
use aws_sdk_ecs::types::{
    AttachmentStateChange, AwsVpcConfiguration, ContainerDefinition, ContainerStateChange, ManagedAgentName,
    ManagedAgentStateChange, NetworkBinding, NetworkConfiguration, NetworkMode, PortMapping, Task, TransportProtocol,
};
use aws_sdk_ecs::Client;
use common::{error_code, error_message, register_instance, Running};

const CLUSTER: &str = "fleet";

struct Fixture {
    server: Running,
    client: Client,
    instance: String,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start(dir.path()).await;
    let client = server.client();
    client.create_cluster().cluster_name(CLUSTER).send().await.unwrap();
    for (family, network_mode) in [("web", NetworkMode::Bridge), ("vpc", NetworkMode::Awsvpc)] {
        client
            .register_task_definition()
            .family(family)
            .network_mode(network_mode)
            .container_definitions(
                ContainerDefinition::builder()
                    .name("app")
                    .image("nginx")
                    .memory(512)
                    .cpu(512)
                    .port_mappings(PortMapping::builder().container_port(80).build())
                    .build(),
            )
            .container_definitions(
                ContainerDefinition::builder()
                    .name("log")
                    .image("fluent-bit")
                    .memory(128)
                    .essential(false)
                    .build(),
            )
            .send()
            .await
            .unwrap();
    }
    let instance = register_instance(&client, CLUSTER).await;
    Fixture {
        server,
        client,
        instance,
        _dir: dir,
    }
}

impl Fixture {
    async fn run(&self, family: &str) -> String {
        let mut run = self.client.run_task().cluster(CLUSTER).task_definition(family);
        if family == "vpc" {
            run = run.network_configuration(
                NetworkConfiguration::builder()
                    .awsvpc_configuration(AwsVpcConfiguration::builder().subnets("subnet-a").build().unwrap())
                    .build(),
            );
        }
        run.send().await.unwrap().tasks()[0].task_arn().unwrap().to_owned()
    }

    async fn describe(&self, task: &str) -> Task {
        self.client
            .describe_tasks()
            .cluster(CLUSTER)
            .tasks(task)
            .send()
            .await
            .unwrap()
            .tasks()[0]
            .clone()
    }

    async fn remaining_cpu(&self) -> i32 {
        let described = self
            .client
            .describe_container_instances()
            .cluster(CLUSTER)
            .container_instances(&self.instance)
            .send()
            .await
            .unwrap();
        let instance = &described.container_instances()[0];
        let cpu = instance
            .remaining_resources()
            .iter()
            .find(|r| r.name() == Some("CPU"))
            .unwrap();
        cpu.integer_value()
    }
}

fn container(name: &str, status: &str) -> aws_sdk_ecs::types::builders::ContainerStateChangeBuilder {
    ContainerStateChange::builder()
        .container_name(name)
        .status(status)
        .set_network_bindings(Some(vec![]))
}

fn binding(container: i32, host: i32) -> NetworkBinding {
    NetworkBinding::builder()
        .bind_ip("0.0.0.0")
        .container_port(container)
        .host_port(host)
        .protocol(TransportProtocol::Tcp)
        .build()
}

fn container_of<'a>(task: &'a Task, name: &str) -> &'a aws_sdk_ecs::types::Container {
    task.containers().iter().find(|c| c.name() == Some(name)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_with_digests_then_running_with_bindings_then_repeats() {
    let f = fixture().await;
    let task = f.run("web").await;
    f.client
        .submit_task_state_change()
        .cluster(CLUSTER)
        .task(&task)
        .status("PENDING")
        .pull_started_at(DateTime::from_secs(1_800_000_000))
        .pull_stopped_at(DateTime::from_secs(1_800_000_007))
        .containers(container("app", "PENDING").image_digest("sha256:app").build())
        .containers(container("log", "PENDING").image_digest("sha256:log").build())
        .send()
        .await
        .unwrap();
    let pending = f.describe(&task).await;
    assert_eq!(pending.last_status(), Some("PENDING"));
    assert_eq!(pending.version(), 2, "digests and pull times are a change");
    assert_eq!(pending.pull_started_at().unwrap().secs(), 1_800_000_000);
    assert_eq!(pending.pull_stopped_at().unwrap().secs(), 1_800_000_007);
    assert_eq!(container_of(&pending, "log").image_digest(), Some("sha256:log"));
    assert_eq!(pending.connectivity().map(|c| c.as_str()), Some("CONNECTED"));
    assert!(pending.connectivity_at().is_some());
    assert!(pending.started_at().is_none());

    f.client
        .submit_task_state_change()
        .cluster(CLUSTER)
        .task(&task)
        .status("RUNNING")
        .containers(
            container("app", "RUNNING")
                .runtime_id("c0ffee")
                .network_bindings(binding(80, 32768))
                .build(),
        )
        .send()
        .await
        .unwrap();
    let running = f.describe(&task).await;
    assert_eq!(running.last_status(), Some("RUNNING"));
    assert_eq!(running.desired_status(), Some("RUNNING"));
    assert_eq!(running.version(), 3);
    assert!(running.started_at().is_some());
    let app = container_of(&running, "app");
    assert_eq!((app.last_status(), app.runtime_id()), (Some("RUNNING"), Some("c0ffee")));
    assert_eq!(app.network_bindings(), &[binding(80, 32768)]);
    assert_eq!(app.image_digest(), Some("sha256:app"), "earlier fields stay");
    assert_eq!(container_of(&running, "log").last_status(), Some("PENDING"));

    // The ticker re-sends RUNNING carrying the sidecar's start, then again with nothing new.
    let resend = || {
        f.client
            .submit_task_state_change()
            .cluster(CLUSTER)
            .task(&task)
            .status("RUNNING")
            .containers(container("log", "RUNNING").runtime_id("10g").build())
    };
    resend().send().await.unwrap();
    let after = f.describe(&task).await;
    assert_eq!(after.version(), 4);
    assert_eq!(container_of(&after, "log").last_status(), Some("RUNNING"));
    resend().send().await.unwrap();
    assert_eq!(f.describe(&task).await, after, "an identical repeat changes nothing");
    // A lower status is acknowledged and ignored.
    f.client
        .submit_task_state_change()
        .cluster(CLUSTER)
        .task(&task)
        .status("PENDING")
        .containers(container("app", "PENDING").build())
        .send()
        .await
        .unwrap();
    assert_eq!(f.describe(&task).await, after);
    f.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_with_exit_codes_releases_resources_and_ignores_late_reports() {
    let f = fixture().await;
    let full = f.remaining_cpu().await;
    let task = f.run("web").await;
    assert_eq!(f.remaining_cpu().await, full - 512);
    f.client
        .submit_task_state_change()
        .cluster(CLUSTER)
        .task(&task)
        .status("RUNNING")
        .containers(container("app", "RUNNING").build())
        .containers(container("log", "RUNNING").build())
        .send()
        .await
        .unwrap();
    f.client
        .submit_task_state_change()
        .cluster(CLUSTER)
        .task(&task)
        .status("STOPPED")
        .execution_stopped_at(DateTime::from_secs_f64(1_800_000_100.5))
        .containers(
            container("app", "STOPPED")
                .exit_code(2)
                .reason("OOM? no, exit 2")
                .build(),
        )
        .containers(container("log", "STOPPED").exit_code(0).build())
        .send()
        .await
        .unwrap();
    let stopped = f.describe(&task).await;
    assert_eq!(stopped.last_status(), Some("STOPPED"));
    assert_eq!(stopped.desired_status(), Some("STOPPED"));
    assert_eq!(
        stopped.stop_code().map(|c| c.as_str()),
        Some("EssentialContainerExited")
    );
    assert_eq!(stopped.stopped_reason(), Some("Essential container in task exited"));
    assert_eq!(stopped.execution_stopped_at().unwrap().as_secs_f64(), 1_800_000_100.5);
    assert!(stopped.stopped_at().is_some() && stopped.stopping_at().is_some());
    assert_eq!(container_of(&stopped, "app").exit_code(), Some(2));
    assert_eq!(container_of(&stopped, "app").reason(), Some("OOM? no, exit 2"));
    assert_eq!(container_of(&stopped, "log").exit_code(), Some(0));
    assert_eq!(f.remaining_cpu().await, full, "STOPPED releases the instance");

    for status in ["RUNNING", "STOPPED"] {
        f.client
            .submit_task_state_change()
            .cluster(CLUSTER)
            .task(&task)
            .status(status)
            .containers(container("app", status).exit_code(9).build())
            .send()
            .await
            .unwrap();
        assert_eq!(
            f.describe(&task).await,
            stopped,
            "{status} after STOPPED changes nothing"
        );
    }
    f.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_without_any_earlier_report_failed_to_start() {
    let f = fixture().await;
    let task = f.run("web").await;
    f.client
        .submit_task_state_change()
        .cluster(CLUSTER)
        .task(&task)
        .status("STOPPED")
        .reason("CannotPullContainerError: pull access denied")
        .containers(container("app", "STOPPED").reason("CannotPullContainerError").build())
        .send()
        .await
        .unwrap();
    let stopped = f.describe(&task).await;
    assert_eq!(stopped.last_status(), Some("STOPPED"));
    assert_eq!(stopped.stop_code().map(|c| c.as_str()), Some("TaskFailedToStart"));
    assert_eq!(
        stopped.stopped_reason(),
        Some("CannotPullContainerError: pull access denied")
    );
    assert!(stopped.started_at().is_none());
    assert!(stopped.containers().iter().all(|c| c.last_status() == Some("STOPPED")));
    f.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_never_ran_without_a_reason_failed_to_start() {
    let f = fixture().await;
    let task = f.run("web").await;
    // What the agent sends when the image cannot be pulled: the reason is the container's.
    f.client
        .submit_task_state_change()
        .cluster(CLUSTER)
        .task(&task)
        .status("STOPPED")
        .containers(
            container("app", "STOPPED")
                .reason("CannotPullContainerError: manifest unknown")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let stopped = f.describe(&task).await;
    assert_eq!(stopped.stop_code().map(|c| c.as_str()), Some("TaskFailedToStart"));
    assert_eq!(stopped.stopped_reason(), Some("Task failed to start"));
    assert_eq!(
        stopped.containers()[0].reason(),
        Some("CannotPullContainerError: manifest unknown")
    );
    f.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_task_then_the_agent_stops_it() {
    let f = fixture().await;
    let task = f.run("web").await;
    let stopping = f
        .client
        .stop_task()
        .cluster(CLUSTER)
        .task(&task)
        .reason("scale in")
        .send()
        .await
        .unwrap();
    let stopping = stopping.task().unwrap();
    assert_eq!(stopping.desired_status(), Some("STOPPED"));
    assert_eq!(stopping.last_status(), Some("PENDING"));
    f.client
        .submit_task_state_change()
        .cluster(CLUSTER)
        .task(&task)
        .status("STOPPED")
        .containers(container("app", "STOPPED").exit_code(143).build())
        .send()
        .await
        .unwrap();
    let stopped = f.describe(&task).await;
    assert_eq!(stopped.stop_code().map(|c| c.as_str()), Some("UserInitiated"));
    assert_eq!(stopped.stopped_reason(), Some("scale in"));
    assert_eq!(stopped.version(), 3);
    f.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eni_confirmation_and_managed_agents() {
    let f = fixture().await;
    let task = f.run("vpc").await;
    let provisioning = f.describe(&task).await;
    assert_eq!(provisioning.last_status(), Some("PROVISIONING"));
    let eni = provisioning.attachments()[0].id().unwrap().to_owned();
    let eni_arn = format!("arn:aws:ecs:us-east-1:123456789012:attachment/{eni}");

    // The ENI confirmation path: attachments only, no status, no containers.
    f.client
        .submit_task_state_change()
        .cluster(CLUSTER)
        .task(&task)
        .attachments(
            AttachmentStateChange::builder()
                .attachment_arn(&eni_arn)
                .status("ATTACHED")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let attached = f.describe(&task).await;
    assert_eq!(attached.attachments()[0].status(), Some("ATTACHED"));
    assert_eq!(
        attached.last_status(),
        Some("PENDING"),
        "an attached ENI ends PROVISIONING"
    );

    let unknown = f
        .client
        .submit_task_state_change()
        .cluster(CLUSTER)
        .task(&task)
        .attachments(
            AttachmentStateChange::builder()
                .attachment_arn("arn:aws:ecs:us-east-1:123456789012:attachment/nope")
                .status("ATTACHED")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_code(&unknown), "InvalidParameterException");

    // The same through SubmitAttachmentStateChanges.
    let other = f.run("vpc").await;
    let other_eni = f.describe(&other).await.attachments()[0].id().unwrap().to_owned();
    f.client
        .submit_attachment_state_changes()
        .cluster(CLUSTER)
        .attachments(
            AttachmentStateChange::builder()
                .attachment_arn(format!("arn:aws:ecs:us-east-1:123456789012:attachment/{other_eni}"))
                .status("ATTACHED")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(f.describe(&other).await.last_status(), Some("PENDING"));
    let missing = f
        .client
        .submit_attachment_state_changes()
        .cluster(CLUSTER)
        .attachments(
            AttachmentStateChange::builder()
                .attachment_arn("arn:x/none")
                .status("ATTACHED")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_code(&missing), "InvalidParameterException");

    let managed = |status: &str| {
        ManagedAgentStateChange::builder()
            .container_name("app")
            .managed_agent_name(ManagedAgentName::ExecuteCommandAgent)
            .status(status)
            .reason(format!("agent {status}"))
            .build()
            .unwrap()
    };
    f.client
        .submit_task_state_change()
        .cluster(CLUSTER)
        .task(&task)
        .status("RUNNING")
        .managed_agents(managed("RUNNING"))
        .send()
        .await
        .unwrap();
    let running = f.describe(&task).await;
    let agent = &container_of(&running, "app").managed_agents()[0];
    assert_eq!(agent.name().map(|n| n.as_str()), Some("ExecuteCommandAgent"));
    assert_eq!(agent.last_status(), Some("RUNNING"));
    assert!(agent.last_started_at().is_some());
    f.client
        .submit_task_state_change()
        .cluster(CLUSTER)
        .task(&task)
        .managed_agents(managed("STOPPED"))
        .send()
        .await
        .unwrap();
    let agent = container_of(&f.describe(&task).await, "app").managed_agents()[0].clone();
    assert_eq!(
        (agent.last_status(), agent.reason()),
        (Some("STOPPED"), Some("agent STOPPED"))
    );
    f.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_state_changes_move_the_task() {
    let f = fixture().await;
    let task = f.run("web").await;
    let change = |name: &str, status: &str| {
        f.client
            .submit_container_state_change()
            .cluster(CLUSTER)
            .task(&task)
            .container_name(name)
            .status(status)
    };
    change("log", "RUNNING").send().await.unwrap();
    assert_eq!(
        f.describe(&task).await.last_status(),
        Some("PENDING"),
        "only the sidecar runs"
    );
    change("app", "RUNNING")
        .runtime_id("abc")
        .network_bindings(binding(80, 32770))
        .send()
        .await
        .unwrap();
    let running = f.describe(&task).await;
    assert_eq!(running.last_status(), Some("RUNNING"));
    assert_eq!(container_of(&running, "app").network_bindings(), &[binding(80, 32770)]);
    change("app", "STOPPED").exit_code(1).send().await.unwrap();
    assert_eq!(f.describe(&task).await.last_status(), Some("RUNNING"));
    change("log", "STOPPED").exit_code(0).send().await.unwrap();
    let stopped = f.describe(&task).await;
    assert_eq!(stopped.last_status(), Some("STOPPED"));
    assert_eq!(
        stopped.stop_code().map(|c| c.as_str()),
        Some("EssentialContainerExited")
    );
    let err = change("ghost", "RUNNING").send().await.unwrap_err();
    assert_eq!(error_code(&err), "InvalidParameterException");
    let err = f
        .client
        .submit_container_state_change()
        .cluster(CLUSTER)
        .task(&task)
        .status("RUNNING")
        .send()
        .await
        .unwrap_err();
    assert!(error_message(&err).contains("containerName"));
    f.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_binding_rules_are_enforced() {
    let f = fixture().await;
    let task = f.run("web").await;
    let with = |b: NetworkBinding| {
        f.client
            .submit_task_state_change()
            .cluster(CLUSTER)
            .task(&task)
            .status("RUNNING")
            .containers(container("app", "RUNNING").network_bindings(b).build())
    };
    let range = |c: &str, h: Option<&str>| {
        NetworkBinding::builder()
            .container_port_range(c)
            .set_host_port_range(h.map(str::to_owned))
            .protocol(TransportProtocol::Udp)
            .build()
    };
    for bad in [
        binding(0, 80),
        binding(80, 70_000),
        range("9000-8000", None),
        range("9000", None),
        range("0-10", None),
        NetworkBinding::builder().host_port_range("1000-2000").build(),
    ] {
        let err = with(bad.clone()).send().await.unwrap_err();
        assert_eq!(error_code(&err), "InvalidParameterException", "{bad:?}");
        assert!(
            error_message(&err).contains("networkBindings"),
            "{}",
            error_message(&err)
        );
    }
    let overlapping = f
        .client
        .submit_task_state_change()
        .cluster(CLUSTER)
        .task(&task)
        .status("RUNNING")
        .containers(
            container("app", "RUNNING")
                .network_bindings(range("8000-8100", Some("38000-38100")))
                .network_bindings(range("8050-8060", None))
                .build(),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_code(&overlapping), "InvalidParameterException");
    let too_many = (0..101)
        .map(|i| range(&format!("{}-{}", 2000 + i * 2, 2001 + i * 2), None))
        .collect();
    let err = f
        .client
        .submit_task_state_change()
        .cluster(CLUSTER)
        .task(&task)
        .containers(container("app", "RUNNING").set_network_bindings(Some(too_many)).build())
        .send()
        .await
        .unwrap_err();
    assert!(
        error_message(&err).contains("100 port ranges"),
        "{}",
        error_message(&err)
    );
    assert_eq!(f.describe(&task).await.version(), 1, "nothing invalid was recorded");

    with(range("8000-8100", Some("38000-38100"))).send().await.unwrap();
    let bindings = container_of(&f.describe(&task).await, "app")
        .network_bindings()
        .to_vec();
    assert_eq!(bindings[0].container_port_range(), Some("8000-8100"));
    assert_eq!(bindings[0].host_port_range(), Some("38000-38100"));
    f.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_poll_endpoint_points_at_this_server() {
    let f = fixture().await;
    let answer = f
        .client
        .discover_poll_endpoint()
        .cluster(CLUSTER)
        .container_instance(&f.instance)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.endpoint(), Some(format!("{}/acs", f.server.url).as_str()));
    assert_eq!(
        answer.telemetry_endpoint(),
        Some(format!("{}/tcs", f.server.url).as_str())
    );
    assert!(answer.service_connect_endpoint().unwrap().starts_with(&f.server.url));
    f.server.stop().await;
}
