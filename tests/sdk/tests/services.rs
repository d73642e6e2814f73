//! Services with the real `aws-sdk-ecs` client: a service on simulated agents reaches a steady
//! state, rolls a new task definition and drains away, as ECS's scheduler does.

mod common;

use std::time::{Duration, Instant};

use aws_sdk_ecs::types::{ContainerDefinition, Service};
use aws_sdk_ecs::Client;
use common::Running;
use ecsd_agent::client::Credentials;
use ecsd_agent::sim::{self, SimOptions};

const CLUSTER: &str = "fleet";

async fn described(client: &Client, name: &str) -> Service {
    client
        .describe_services()
        .cluster(CLUSTER)
        .services(name)
        .send()
        .await
        .unwrap()
        .services()[0]
        .clone()
}

/// Waits as the `services_stable` waiter does: one deployment, running == desired.
async fn stable(client: &Client, name: &str) -> Service {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let service = described(client, name).await;
        if service.deployments().len() == 1 && service.running_count() == service.desired_count() {
            return service;
        }
        assert!(Instant::now() < deadline, "not stable: {service:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn register(client: &Client, image: &str) -> String {
    client
        .register_task_definition()
        .family("web")
        .container_definitions(
            ContainerDefinition::builder()
                .name("web")
                .image(image)
                .memory(64)
                .build(),
        )
        .send()
        .await
        .unwrap()
        .task_definition()
        .unwrap()
        .task_definition_arn()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_deploys_rolls_and_drains_on_simulated_agents() {
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start(dir.path()).await;
    let client = server.client();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let agents = tokio::spawn(sim::run(
        SimOptions {
            endpoint: server.url.clone(),
            cluster: CLUSTER.into(),
            instances: 2,
            cpu: 2048,
            memory: 4096,
            credentials: Credentials {
                access_key_id: "test".into(),
                secret_access_key: "test".into(),
                region: common::REGION.into(),
            },
            state_file: None,
            tick: Duration::from_millis(50),
            capacity_provider: None,
        },
        stopped,
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    while client
        .list_container_instances()
        .cluster(CLUSTER)
        .send()
        .await
        .map_or(0, |r| r.container_instance_arns().len())
        < 2
    {
        assert!(Instant::now() < deadline, "the simulated agents register");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    register(&client, "nginx:1").await;
    let created = client
        .create_service()
        .cluster(CLUSTER)
        .service_name("web")
        .task_definition("web")
        .desired_count(2)
        .send()
        .await
        .unwrap();
    let created = created.service().unwrap();
    assert_eq!(created.status(), Some("ACTIVE"));
    assert_eq!(
        created.deployments()[0].rollout_state().map(|s| s.as_str()),
        Some("IN_PROGRESS")
    );

    let steady = stable(&client, "web").await;
    assert_eq!(steady.running_count(), 2);
    // The scheduler's next pass, which sees the tasks run, completes the deployment (as in ECS,
    // a moment after the waiter's condition holds).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let service = described(&client, "web").await;
        let state = service.deployments()[0].rollout_state().map(|s| s.as_str().to_owned());
        if state.as_deref() == Some("COMPLETED") {
            break;
        }
        assert!(Instant::now() < deadline, "the deployment never completed: {state:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let second = register(&client, "nginx:2").await;
    client
        .update_service()
        .cluster(CLUSTER)
        .service("web")
        .task_definition("web")
        .send()
        .await
        .unwrap();
    let rolled = stable(&client, "web").await;
    assert_eq!(rolled.task_definition(), Some(second.as_str()));
    assert_eq!(rolled.deployments()[0].task_definition(), Some(second.as_str()));

    client
        .delete_service()
        .cluster(CLUSTER)
        .service("web")
        .force(true)
        .send()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while described(&client, "web").await.status() != Some("INACTIVE") {
        assert!(Instant::now() < deadline, "the service drains to INACTIVE");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let listed = client.list_services().cluster(CLUSTER).send().await.unwrap();
    assert!(listed.service_arns().is_empty());
    let _ = stop.send(true);
    let _ = agents.await;
    server.stop().await;
}
