//! The first path end to end with the real `aws-sdk-ecs` client: cluster, task definition,
//! container instance, RunTask, agent reports through SubmitTaskStateChange, DescribeTasks —
//! and all of it again after a restart on the same data directory.

mod common;

use aws_sdk_ecs::primitives::DateTime;
use aws_sdk_ecs::types::{
    Attribute, ContainerDefinition, ContainerStateChange, KeyValuePair, NetworkBinding, PortMapping, Tag,
    TransportProtocol,
};
use aws_sdk_ecs::Client;
use common::{agent_resources, error_code, error_message, Running};

const CLUSTER: &str = "prod";

async fn setup(client: &Client) -> (String, String) {
    client.create_cluster().cluster_name(CLUSTER).send().await.unwrap();
    client
        .register_task_definition()
        .family("web")
        .container_definitions(
            ContainerDefinition::builder()
                .name("app")
                .image("nginx:1.27")
                .memory(512)
                .cpu(256)
                .port_mappings(PortMapping::builder().container_port(80).host_port(8080).build())
                .docker_labels("team", "edge")
                .build(),
        )
        .container_definitions(
            ContainerDefinition::builder()
                .name("sidecar")
                .image("busybox")
                .memory_reservation(64)
                .essential(false)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let instance = client
        .register_container_instance()
        .cluster(CLUSTER)
        .set_total_resources(Some(agent_resources()))
        .attributes(Attribute::builder().name("ecs.os-type").value("linux").build().unwrap())
        .attributes(
            Attribute::builder()
                .name("ecs.capability.docker-remote-api.1.44")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap()
        .container_instance
        .unwrap();
    let task = client
        .run_task()
        .cluster(CLUSTER)
        .task_definition("web")
        .started_by("tests")
        .send()
        .await
        .unwrap();
    assert!(task.failures().is_empty(), "{:?}", task.failures());
    (
        instance.container_instance_arn.unwrap(),
        task.tasks()[0].task_arn().unwrap().to_owned(),
    )
}

fn binding(container: i32, host: i32) -> NetworkBinding {
    NetworkBinding::builder()
        .bind_ip("0.0.0.0")
        .container_port(container)
        .host_port(host)
        .protocol(TransportProtocol::Tcp)
        .build()
}

async fn report_running(client: &Client, task_arn: &str) {
    client
        .submit_task_state_change()
        .cluster(CLUSTER)
        .task(task_arn)
        .status("RUNNING")
        .pull_started_at(DateTime::from_secs_f64(1_700_000_000.25))
        .pull_stopped_at(DateTime::from_secs_f64(1_700_000_004.5))
        .containers(
            ContainerStateChange::builder()
                .container_name("app")
                .status("RUNNING")
                .runtime_id("d0c4e1")
                .image_digest("sha256:aaaa")
                .network_bindings(binding(80, 8080))
                .build(),
        )
        .containers(
            ContainerStateChange::builder()
                .container_name("sidecar")
                .status("RUNNING")
                .network_bindings(binding(9000, 32768))
                .build(),
        )
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_goes_pending_to_running_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start(dir.path()).await;
    let client = server.client();
    let (instance_arn, task_arn) = setup(&client).await;

    let pending = client
        .describe_tasks()
        .cluster(CLUSTER)
        .tasks(&task_arn)
        .send()
        .await
        .unwrap();
    let task = &pending.tasks()[0];
    assert_eq!(task.last_status(), Some("PENDING"));
    assert_eq!(task.desired_status(), Some("RUNNING"));
    assert_eq!(task.version(), 1);
    assert!(task.created_at().is_some());
    assert_eq!(task.started_by(), Some("tests"));
    assert_eq!(task.group(), Some("family:web"));
    assert_eq!(task.container_instance_arn(), Some(instance_arn.as_str()));
    assert_eq!(task.containers().len(), 2);
    assert!(task.containers().iter().all(|c| c.last_status() == Some("PENDING")));

    // The task holds its CPU, memory and host port on the instance.
    let described = client
        .describe_container_instances()
        .cluster(CLUSTER)
        .container_instances(&instance_arn)
        .send()
        .await
        .unwrap();
    let instance = &described.container_instances()[0];
    assert_eq!(instance.pending_tasks_count(), 1);
    let remaining = instance.remaining_resources();
    let value = |name: &str| remaining.iter().find(|r| r.name() == Some(name)).unwrap();
    assert_eq!(value("CPU").integer_value(), 2048 - 256);
    assert_eq!(value("MEMORY").integer_value(), 4096 - 512 - 64);
    assert!(value("PORTS").string_set_value().contains(&"8080".to_string()));

    report_running(&client, &task_arn).await;
    let running = client
        .describe_tasks()
        .cluster(CLUSTER)
        .tasks(&task_arn)
        .send()
        .await
        .unwrap();
    let task = running.tasks()[0].clone();
    assert_eq!(task.last_status(), Some("RUNNING"));
    assert_eq!(task.version(), 2);
    assert!(task.started_at().is_some());
    assert_eq!(task.pull_started_at().unwrap().as_secs_f64(), 1_700_000_000.25);
    assert_eq!(task.pull_stopped_at().unwrap().as_secs_f64(), 1_700_000_004.5);
    let app = task.containers().iter().find(|c| c.name() == Some("app")).unwrap();
    assert_eq!(app.last_status(), Some("RUNNING"));
    assert_eq!(app.runtime_id(), Some("d0c4e1"));
    assert_eq!(app.image_digest(), Some("sha256:aaaa"));
    assert_eq!(app.network_bindings(), &[binding(80, 8080)]);

    // The agent re-sends RUNNING on its ticker: acknowledged, nothing changes.
    report_running(&client, &task_arn).await;
    let again = client
        .describe_tasks()
        .cluster(CLUSTER)
        .tasks(&task_arn)
        .send()
        .await
        .unwrap();
    assert_eq!(again.tasks()[0], task);

    let cluster = client.describe_clusters().clusters(CLUSTER).send().await.unwrap();
    let cluster = &cluster.clusters()[0];
    assert_eq!(cluster.running_tasks_count(), 1);
    assert_eq!(cluster.pending_tasks_count(), 0);
    assert_eq!(cluster.registered_container_instances_count(), 1);

    server.stop().await;
    let server = Running::start(dir.path()).await;
    let client = server.client();
    let after = client
        .describe_tasks()
        .cluster(CLUSTER)
        .tasks(&task_arn)
        .send()
        .await
        .unwrap();
    assert_eq!(after.tasks()[0], task, "the task is exactly as before the restart");
    let definition = client
        .describe_task_definition()
        .task_definition("web")
        .send()
        .await
        .unwrap();
    let app = &definition.task_definition().unwrap().container_definitions()[0];
    assert_eq!(app.docker_labels().unwrap()["team"], "edge");
    let instances = client.list_container_instances().cluster(CLUSTER).send().await.unwrap();
    assert_eq!(instances.container_instance_arns(), &[instance_arn]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_releases_the_instance_and_ends_the_task() {
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start(dir.path()).await;
    let client = server.client();
    let (instance_arn, task_arn) = setup(&client).await;
    report_running(&client, &task_arn).await;
    client
        .submit_task_state_change()
        .cluster(format!("arn:aws:ecs:us-east-1:123456789012:cluster/{CLUSTER}"))
        .task(task_arn.rsplit('/').next().unwrap())
        .status("STOPPED")
        .execution_stopped_at(DateTime::from_secs(1_700_000_100))
        .containers(
            ContainerStateChange::builder()
                .container_name("app")
                .status("STOPPED")
                .exit_code(3)
                .network_bindings(binding(80, 8080))
                .build(),
        )
        .send()
        .await
        .unwrap();
    let task = client
        .describe_tasks()
        .cluster(CLUSTER)
        .tasks(&task_arn)
        .send()
        .await
        .unwrap()
        .tasks()[0]
        .clone();
    assert_eq!(task.last_status(), Some("STOPPED"));
    assert_eq!(task.desired_status(), Some("STOPPED"));
    assert_eq!(task.stop_code().map(|c| c.as_str()), Some("EssentialContainerExited"));
    assert_eq!(task.stopped_reason(), Some("Essential container in task exited"));
    assert!(task.stopped_at().is_some());
    assert_eq!(task.execution_stopped_at().unwrap().secs(), 1_700_000_100);
    assert!(task.containers().iter().all(|c| c.last_status() == Some("STOPPED")));
    assert_eq!(task.containers()[0].exit_code(), Some(3));
    assert_eq!(task.version(), 3);

    // A late RUNNING after STOPPED is acknowledged and ignored.
    report_running(&client, &task_arn).await;
    let late = client
        .describe_tasks()
        .cluster(CLUSTER)
        .tasks(&task_arn)
        .send()
        .await
        .unwrap();
    assert_eq!(late.tasks()[0], task);

    let instance = client
        .describe_container_instances()
        .cluster(CLUSTER)
        .container_instances(&instance_arn)
        .send()
        .await
        .unwrap()
        .container_instances()[0]
        .clone();
    assert_eq!(instance.running_tasks_count(), 0);
    let cpu = instance
        .remaining_resources()
        .iter()
        .find(|r| r.name() == Some("CPU"))
        .unwrap();
    assert_eq!(cpu.integer_value(), 2048);
    let ports = instance
        .remaining_resources()
        .iter()
        .find(|r| r.name() == Some("PORTS"))
        .unwrap();
    assert!(!ports.string_set_value().contains(&"8080".to_string()));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_task_definitions_and_instances_behave_like_ecs() {
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start(dir.path()).await;
    let client = server.client();

    let first = client
        .create_cluster()
        .cluster_name("alpha")
        .tags(Tag::builder().key("env").value("test").build())
        .settings(
            aws_sdk_ecs::types::ClusterSetting::builder()
                .name(aws_sdk_ecs::types::ClusterSettingName::ContainerInsights)
                .value("enabled")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let again = client.create_cluster().cluster_name("alpha").send().await.unwrap();
    assert_eq!(
        first.cluster().unwrap().cluster_arn(),
        again.cluster().unwrap().cluster_arn()
    );
    assert_eq!(
        first.cluster().unwrap().cluster_arn(),
        Some("arn:aws:ecs:us-east-1:123456789012:cluster/alpha")
    );
    client.create_cluster().send().await.unwrap();

    let described = client
        .describe_clusters()
        .clusters("alpha")
        .clusters("ghost")
        .include(aws_sdk_ecs::types::ClusterField::Tags)
        .include(aws_sdk_ecs::types::ClusterField::Settings)
        .send()
        .await
        .unwrap();
    assert_eq!(described.clusters().len(), 1);
    assert_eq!(described.clusters()[0].tags()[0].value(), Some("test"));
    assert_eq!(described.clusters()[0].settings()[0].value(), Some("enabled"));
    assert_eq!(described.failures()[0].reason(), Some("MISSING"));
    assert_eq!(
        described.failures()[0].arn(),
        Some("arn:aws:ecs:us-east-1:123456789012:cluster/ghost")
    );
    let plain = client.describe_clusters().clusters("alpha").send().await.unwrap();
    assert!(plain.clusters()[0].tags().is_empty(), "tags only with include TAGS");

    let mut names = Vec::new();
    let mut pages = client.list_clusters().max_results(1).into_paginator().send();
    while let Some(page) = pages.next().await {
        names.extend(page.unwrap().cluster_arns().to_vec());
    }
    assert_eq!(names.len(), 2);
    let bad_token = client.list_clusters().next_token("garbage").send().await.unwrap_err();
    assert_eq!(error_code(&bad_token), "InvalidParameterException");

    let container = || {
        ContainerDefinition::builder()
            .name("c")
            .image("busybox")
            .memory(128)
            .build()
    };
    for expected in 1..=2 {
        let registered = client
            .register_task_definition()
            .family("job")
            .container_definitions(container())
            .send()
            .await
            .unwrap();
        let definition = registered.task_definition().unwrap();
        assert_eq!(definition.revision(), expected);
        assert_eq!(
            definition.task_definition_arn(),
            Some(format!("arn:aws:ecs:us-east-1:123456789012:task-definition/job:{expected}").as_str())
        );
        assert_eq!(definition.container_definitions()[0].essential(), Some(true));
    }
    for reference in [
        "job",
        "job:2",
        "arn:aws:ecs:us-east-1:123456789012:task-definition/job:2",
    ] {
        let d = client
            .describe_task_definition()
            .task_definition(reference)
            .send()
            .await
            .unwrap();
        assert_eq!(d.task_definition().unwrap().revision(), 2, "{reference}");
    }
    let missing = client
        .describe_task_definition()
        .task_definition("job:9")
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_code(&missing), "ClientException");
    let no_memory = client
        .register_task_definition()
        .family("bad")
        .container_definitions(ContainerDefinition::builder().name("c").image("busybox").build())
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_code(&no_memory), "ClientException");
    assert!(error_message(&no_memory).contains("memoryReservation"));

    let unknown_cluster = client
        .register_container_instance()
        .cluster("ghost")
        .set_total_resources(Some(common::agent_resources()))
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_code(&unknown_cluster), "ClusterNotFoundException");

    let attributes = vec![
        Attribute::builder().name("ecs.os-type").value("linux").build().unwrap(),
        Attribute::builder()
            .name("ecs.cpu-architecture")
            .value("x86_64")
            .build()
            .unwrap(),
        Attribute::builder()
            .name("ecs.capability.execution-role-awslogs")
            .build()
            .unwrap(),
        Attribute::builder().name("custom.rack").value("r7").build().unwrap(),
    ];
    let registered = client
        .register_container_instance()
        .cluster("alpha")
        .set_total_resources(Some(common::agent_resources()))
        .set_attributes(Some(attributes.clone()))
        .version_info(
            aws_sdk_ecs::types::VersionInfo::builder()
                .agent_version("1.105.0")
                .docker_version("DockerVersion: 25.0.0")
                .build(),
        )
        .send()
        .await
        .unwrap()
        .container_instance
        .unwrap();
    assert_eq!(
        registered.attributes(),
        attributes.as_slice(),
        "attributes are echoed exactly"
    );
    assert_eq!(registered.registered_resources(), common::agent_resources().as_slice());
    assert_eq!(registered.status(), Some("ACTIVE"));
    assert_eq!(registered.version_info().unwrap().agent_version(), Some("1.105.0"));

    // Re-registering from the agent's checkpoint keeps the instance's identity.
    let arn = registered.container_instance_arn().unwrap();
    let again = client
        .register_container_instance()
        .cluster("alpha")
        .container_instance_arn(arn)
        .set_total_resources(Some(common::agent_resources()))
        .set_attributes(Some(attributes))
        .send()
        .await
        .unwrap()
        .container_instance
        .unwrap();
    assert_eq!(again.container_instance_arn(), Some(arn));
    assert_eq!(again.version(), 2);
    let listed = client.list_container_instances().cluster("alpha").send().await.unwrap();
    assert_eq!(listed.container_instance_arns(), &[arn.to_owned()]);

    let missing = client
        .describe_container_instances()
        .cluster("alpha")
        .container_instances("0123")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.failures()[0].reason(), Some("MISSING"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_task_refuses_and_reports_like_ecs() {
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start(dir.path()).await;
    let client = server.client();
    client.create_cluster().cluster_name("empty").send().await.unwrap();
    common::register_definition(&client, "big", "c", 3000).await;

    let none = client
        .run_task()
        .cluster("empty")
        .task_definition("big")
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_code(&none), "InvalidParameterException");
    assert_eq!(
        error_message(&none),
        "No Container Instances were found in your cluster."
    );

    let ghost = client
        .run_task()
        .cluster("ghost")
        .task_definition("big")
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_code(&ghost), "ClusterNotFoundException");

    client
        .register_container_instance()
        .cluster("empty")
        .set_total_resources(Some(agent_resources()))
        .send()
        .await
        .unwrap();
    let too_many = client
        .run_task()
        .cluster("empty")
        .task_definition("big")
        .count(11)
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_code(&too_many), "InvalidParameterException");
    let unknown = client
        .run_task()
        .cluster("empty")
        .task_definition("nope")
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_code(&unknown), "ClientException");

    let partial = client
        .run_task()
        .cluster("empty")
        .task_definition("big")
        .count(2)
        .send()
        .await
        .unwrap();
    assert_eq!(partial.tasks().len(), 1, "4096 MiB holds one 3000 MiB task");
    assert_eq!(partial.failures().len(), 1);
    assert_eq!(partial.failures()[0].reason(), Some("RESOURCE:MEMORY"));

    client
        .register_task_definition()
        .family("vpc")
        .network_mode(aws_sdk_ecs::types::NetworkMode::Awsvpc)
        .container_definitions(
            ContainerDefinition::builder()
                .name("c")
                .image("busybox")
                .memory(64)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let no_network = client
        .run_task()
        .cluster("empty")
        .task_definition("vpc")
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_code(&no_network), "InvalidParameterException");
    let vpc = client
        .run_task()
        .cluster("empty")
        .task_definition("vpc")
        .network_configuration(
            aws_sdk_ecs::types::NetworkConfiguration::builder()
                .awsvpc_configuration(
                    aws_sdk_ecs::types::AwsVpcConfiguration::builder()
                        .subnets("subnet-1")
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    let task = &vpc.tasks()[0];
    assert_eq!(task.last_status(), Some("PROVISIONING"));
    let eni = &task.attachments()[0];
    assert_eq!(eni.r#type(), Some("ElasticNetworkInterface"));
    assert_eq!(
        eni.details(),
        &[KeyValuePair::builder().name("subnetId").value("subnet-1").build()]
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_reports_that_can_never_succeed_are_invalid_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start(dir.path()).await;
    let client = server.client();
    let (_, task_arn) = setup(&client).await;

    let unknown_task = client
        .submit_task_state_change()
        .cluster(CLUSTER)
        .task("arn:aws:ecs:us-east-1:123456789012:task/prod/ffffffffffffffffffffffffffffffff")
        .status("RUNNING")
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_code(&unknown_task), "InvalidParameterException");
    assert!(error_message(&unknown_task).contains("'task'"));

    let other_cluster = client
        .submit_task_state_change()
        .cluster(CLUSTER)
        .task(task_arn.replace("/prod/", "/other/"))
        .status("RUNNING")
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_code(&other_cluster), "InvalidParameterException");

    let unknown_cluster = client
        .submit_task_state_change()
        .cluster("ghost")
        .task(&task_arn)
        .status("RUNNING")
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_code(&unknown_cluster), "ClusterNotFoundException");

    let bad_status = client
        .submit_task_state_change()
        .cluster(CLUSTER)
        .task(&task_arn)
        .status("STOPPING")
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_code(&bad_status), "InvalidParameterException");
    assert!(error_message(&bad_status).contains("'status'"));

    let bad_container = client
        .submit_task_state_change()
        .cluster(CLUSTER)
        .task(&task_arn)
        .status("RUNNING")
        .containers(
            ContainerStateChange::builder()
                .container_name("nope")
                .status("RUNNING")
                .build(),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_code(&bad_container), "InvalidParameterException");
    assert!(error_message(&bad_container).contains("containers[0].containerName"));

    let task = client
        .describe_tasks()
        .cluster(CLUSTER)
        .tasks(&task_arn)
        .send()
        .await
        .unwrap();
    assert_eq!(task.tasks()[0].version(), 1, "refused reports change nothing");
    assert_eq!(task.tasks()[0].last_status(), Some("PENDING"));

    let missing = client
        .describe_tasks()
        .cluster(CLUSTER)
        .tasks(&task_arn)
        .tasks("0000")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.tasks().len(), 1);
    assert_eq!(missing.failures()[0].reason(), Some("MISSING"));
    assert_eq!(
        missing.failures()[0].arn(),
        Some("arn:aws:ecs:us-east-1:123456789012:task/prod/0000")
    );
    let empty = client.describe_tasks().cluster(CLUSTER).send().await.unwrap_err();
    assert_eq!(error_code(&empty), "InvalidParameterException");
    server.stop().await;
}
