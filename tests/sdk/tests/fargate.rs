//! Fargate, capacity providers, account settings and task protection with the real
//! `aws-sdk-ecs` client.

mod common;

use std::time::{Duration, Instant};

use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, CapacityProviderStrategyItem, Compatibility, ContainerDefinition, LaunchType,
    NetworkConfiguration, NetworkMode, SettingName, Task,
};
use aws_sdk_ecs::Client;
use common::Running;

const CLUSTER: &str = "serverless";

fn network() -> NetworkConfiguration {
    NetworkConfiguration::builder()
        .awsvpc_configuration(
            AwsVpcConfiguration::builder()
                .subnets("subnet-0f0f0f0f")
                .assign_public_ip(AssignPublicIp::Disabled)
                .build()
                .unwrap(),
        )
        .build()
}

async fn register(client: &Client) {
    let definition = client
        .register_task_definition()
        .family("api")
        .network_mode(NetworkMode::Awsvpc)
        .requires_compatibilities(Compatibility::Fargate)
        .cpu("512")
        .memory("1024")
        .container_definitions(ContainerDefinition::builder().name("api").image("nginx:1").build())
        .send()
        .await
        .unwrap();
    let compatibilities = definition.task_definition().unwrap().compatibilities();
    assert!(compatibilities.contains(&Compatibility::Fargate));
}

async fn task(client: &Client, arn: &str) -> Task {
    client
        .describe_tasks()
        .cluster(CLUSTER)
        .tasks(arn)
        .send()
        .await
        .unwrap()
        .tasks()[0]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fargate_task_runs_with_its_network_interface_and_stops_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start(dir.path()).await;
    let client = server.client();
    client.create_cluster().cluster_name(CLUSTER).send().await.unwrap();
    register(&client).await;
    let started = client
        .run_task()
        .cluster(CLUSTER)
        .task_definition("api")
        .launch_type(LaunchType::Fargate)
        .network_configuration(network())
        .send()
        .await
        .unwrap();
    let arn = started.tasks()[0].task_arn().unwrap().to_owned();
    assert_eq!(started.tasks()[0].last_status(), Some("PROVISIONING"));
    assert_eq!(started.tasks()[0].container_instance_arn(), None);
    let deadline = Instant::now() + Duration::from_secs(30);
    let running = loop {
        let t = task(&client, &arn).await;
        if t.last_status() == Some("RUNNING") {
            break t;
        }
        assert!(Instant::now() < deadline, "never ran: {t:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(running.launch_type(), Some(&LaunchType::Fargate));
    assert_eq!(running.capacity_provider_name(), Some("FARGATE"));
    assert_eq!(running.platform_version(), Some("1.4.0"));
    let eni = &running.attachments()[0];
    assert_eq!(eni.r#type(), Some("ElasticNetworkInterface"));
    assert_eq!(eni.status(), Some("ATTACHED"));
    let address = eni
        .details()
        .iter()
        .find(|d| d.name() == Some("privateIPv4Address"))
        .and_then(|d| d.value())
        .unwrap()
        .to_owned();
    assert_eq!(
        running.containers()[0].network_interfaces()[0].private_ipv4_address(),
        Some(address.as_str())
    );
    client.stop_task().cluster(CLUSTER).task(&arn).send().await.unwrap();
    let stopped = loop {
        let t = task(&client, &arn).await;
        if t.last_status() == Some("STOPPED") {
            break t;
        }
        assert!(Instant::now() < deadline, "never stopped: {t:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(stopped.stop_code().map(|c| c.as_str()), Some("UserInitiated"));
    assert_eq!(stopped.containers()[0].exit_code(), Some(143));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_settings_and_protection_answer_as_ecs_does() {
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start(dir.path()).await;
    let client = server.client();
    let providers = client.describe_capacity_providers().send().await.unwrap();
    let names: Vec<&str> = providers.capacity_providers().iter().filter_map(|p| p.name()).collect();
    assert_eq!(names, ["FARGATE", "FARGATE_SPOT"]);
    client
        .create_cluster()
        .cluster_name(CLUSTER)
        .capacity_providers("FARGATE_SPOT")
        .default_capacity_provider_strategy(
            CapacityProviderStrategyItem::builder()
                .capacity_provider("FARGATE_SPOT")
                .weight(1)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    register(&client).await;
    let started = client
        .run_task()
        .cluster(CLUSTER)
        .task_definition("api")
        .count(2)
        .network_configuration(network())
        .send()
        .await
        .unwrap();
    let spot: Vec<Option<&str>> = started.tasks().iter().map(|t| t.capacity_provider_name()).collect();
    assert_eq!(spot, [Some("FARGATE_SPOT"), Some("FARGATE_SPOT")]);

    let setting = client
        .put_account_setting()
        .name(SettingName::ContainerInsights)
        .value("enabled")
        .send()
        .await
        .unwrap();
    assert_eq!(setting.setting().unwrap().value(), Some("enabled"));
    let listed = client
        .list_account_settings()
        .name(SettingName::ContainerInsights)
        .effective_settings(true)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.settings()[0].value(), Some("enabled"));

    // A task no service started cannot be protected.
    let arn = started.tasks()[0].task_arn().unwrap();
    let protection = client
        .update_task_protection()
        .cluster(CLUSTER)
        .tasks(arn)
        .protection_enabled(true)
        .send()
        .await
        .unwrap();
    assert!(protection.protected_tasks().is_empty());
    assert_eq!(protection.failures()[0].reason(), Some("TASK_NOT_VALID"));
    server.stop().await;
}
