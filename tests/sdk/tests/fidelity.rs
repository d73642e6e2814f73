//! Behaviour that must match ECS exactly and once did not: regions, deregistration being
//! final, which instances and families are listed by default, and RunTask's idempotency tokens.

mod common;

use aws_sdk_ecs::operation::run_task::RunTaskError;
use aws_sdk_ecs::types::{ContainerInstanceStatus, TaskDefinitionFamilyStatus};
use aws_sdk_ecs::Client;
use common::{agent_resources, error_code, error_message, register_instance, Running, ACCOUNT};

async fn register_definition(client: &Client, family: &str) {
    common::register_definition(client, family, "app", 64).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_region_is_served_and_each_is_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start(dir.path()).await;
    let ireland = server.client_as("test", "test", "eu-west-1");
    let created = ireland
        .create_cluster()
        .cluster_name("dublin")
        .send()
        .await
        .unwrap()
        .cluster
        .unwrap();
    assert_eq!(
        created.cluster_arn(),
        Some(format!("arn:aws:ecs:eu-west-1:{ACCOUNT}:cluster/dublin").as_str())
    );
    let govcloud = server.client_as("test", "test", "us-gov-west-1");
    govcloud.list_clusters().send().await.unwrap();

    let virginia = server.client();
    let listed = virginia.list_clusters().send().await.unwrap();
    assert!(listed.cluster_arns().is_empty(), "{:?}", listed.cluster_arns());
    let other = virginia
        .describe_clusters()
        .clusters(created.cluster_arn().unwrap())
        .send()
        .await
        .unwrap();
    assert!(other.clusters().is_empty(), "another region's ARN finds nothing");

    for bad in ["moon-base-1", "useast1", "us-east"] {
        let err = server
            .client_as("test", "test", bad)
            .list_clusters()
            .send()
            .await
            .unwrap_err();
        assert_eq!(error_code(&err), "InvalidSignatureException", "{bad}");
        assert!(error_message(&err).contains("valid region"), "{bad}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deregistration_is_final_and_hides_the_instance_from_lists() {
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start(dir.path()).await;
    let client = server.client();
    client.create_cluster().cluster_name("fleet").send().await.unwrap();
    let kept = register_instance(&client, "fleet").await;
    let gone = register_instance(&client, "fleet").await;
    client
        .deregister_container_instance()
        .cluster("fleet")
        .container_instance(&gone)
        .send()
        .await
        .unwrap();

    let listed = client.list_container_instances().cluster("fleet").send().await.unwrap();
    assert_eq!(listed.container_instance_arns(), std::slice::from_ref(&kept));
    let active = client
        .list_container_instances()
        .cluster("fleet")
        .status(ContainerInstanceStatus::Active)
        .send()
        .await
        .unwrap();
    assert_eq!(active.container_instance_arns(), std::slice::from_ref(&kept));
    let described = client
        .describe_container_instances()
        .cluster("fleet")
        .container_instances(&gone)
        .send()
        .await
        .unwrap();
    assert_eq!(described.container_instances()[0].status(), Some("INACTIVE"));
    // INACTIVE is no status to list by (not in the model's enum).
    let raw = server
        .raw(
            Some("AmazonEC2ContainerServiceV20141113.ListContainerInstances"),
            r#"{"cluster": "fleet", "status": "INACTIVE"}"#,
        )
        .await;
    assert_eq!(raw.status, 400);
    assert_eq!(raw.json["__type"], "InvalidParameterException");

    // An agent with saved state naming the deregistered instance is refused, and registers anew.
    let err = client
        .register_container_instance()
        .cluster("fleet")
        .container_instance_arn(&gone)
        .set_total_resources(Some(agent_resources()))
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_code(&err), "ClientException");
    assert!(error_message(&err).contains("inactive"), "{}", error_message(&err));
    let still = client
        .describe_container_instances()
        .cluster("fleet")
        .container_instances(&gone)
        .send()
        .await
        .unwrap();
    assert_eq!(still.container_instances()[0].status(), Some("INACTIVE"));
    let fresh = register_instance(&client, "fleet").await;
    assert_ne!(fresh, gone);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn families_without_a_status_are_active_and_inactive_ones() {
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start(dir.path()).await;
    let client = server.client();
    register_definition(&client, "alive").await;
    register_definition(&client, "retired").await;
    client
        .deregister_task_definition()
        .task_definition("retired:1")
        .send()
        .await
        .unwrap();
    let families = |status: Option<TaskDefinitionFamilyStatus>| {
        let client = client.clone();
        async move {
            client
                .list_task_definition_families()
                .set_status(status)
                .send()
                .await
                .unwrap()
                .families()
                .to_vec()
        }
    };
    assert_eq!(families(None).await, ["alive", "retired"]);
    assert_eq!(families(Some(TaskDefinitionFamilyStatus::Active)).await, ["alive"]);
    assert_eq!(families(Some(TaskDefinitionFamilyStatus::Inactive)).await, ["retired"]);
    assert_eq!(
        families(Some(TaskDefinitionFamilyStatus::All)).await,
        ["alive", "retired"]
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_token_reused_for_another_request_is_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start(dir.path()).await;
    let client = server.client();
    client.create_cluster().cluster_name("jobs").send().await.unwrap();
    register_instance(&client, "jobs").await;
    register_definition(&client, "batch").await;
    register_definition(&client, "other").await;
    let run = |definition: &'static str, count: i32| {
        client
            .run_task()
            .cluster("jobs")
            .task_definition(definition)
            .count(count)
            .client_token("nightly-2026-12-01")
            .send()
    };
    let first = run("batch", 2).await.unwrap();
    let arns: Vec<String> = first.tasks().iter().map(|t| t.task_arn().unwrap().to_owned()).collect();
    assert_eq!(arns.len(), 2);

    let again = run("batch", 2).await.unwrap();
    let again: Vec<String> = again.tasks().iter().map(|t| t.task_arn().unwrap().to_owned()).collect();
    assert_eq!(again, arns, "the same request with the same token answers what it made");

    for (definition, count) in [("other", 2), ("batch", 1)] {
        let err = run(definition, count).await.unwrap_err();
        assert_eq!(error_code(&err), "ConflictException", "{definition} x{count}");
        let Some(RunTaskError::ConflictException(conflict)) = err.as_service_error() else {
            panic!("not a ConflictException: {err:?}");
        };
        let mut ids = conflict.resource_ids().to_vec();
        ids.sort();
        let mut expected = arns.clone();
        expected.sort();
        assert_eq!(ids, expected, "resourceIds name the tasks made with the token");
    }
    let listed = client.list_tasks().cluster("jobs").send().await.unwrap();
    assert_eq!(listed.task_arns().len(), 2, "a conflict makes no task");

    let bad_token = client
        .run_task()
        .cluster("jobs")
        .task_definition("batch")
        .client_token("has a space")
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_code(&bad_token), "InvalidParameterException");
    assert!(error_message(&bad_token).contains("clientToken"));
    server.stop().await;
}
