//! Who gets in and what they may do: SigV4 with real clients and tampered requests,
//! principals and permissions from a credentials file, account and region isolation,
//! throttling and body limits.

mod common;

use std::time::{Duration, SystemTime};

use aws_sdk_ecs::types::Tag;
use common::{agent_resources, error_code, error_message, Running, REGION, TARGET};
use ecsd::auth::{Keys, Regions};
use ecsd::server::{Limits, Options};
use ecsd::throttle::{Family, Rate, Throttle};

const CREDENTIALS: &str = r#"
[[principals]]
name = "alice"
access_key_id = "AKIAALICE"
secret_access_key = "alice-secret"
account_id = "111111111111"
permissions = ["admin"]

[[principals]]
name = "bob"
access_key_id = "AKIABOB"
secret_access_key = "bob-secret"
account_id = "222222222222"
permissions = ["admin"]

[[principals]]
name = "agent"
access_key_id = "AKIAAGENT"
secret_access_key = "agent-secret"
account_id = "111111111111"
permissions = ["agent"]

[[principals]]
name = "ci"
access_key_id = "AKIACI"
secret_access_key = "ci-secret"
account_id = "111111111111"
permissions = ["operator"]
clusters = ["ci-*"]
"#;

async fn options(dir: &std::path::Path) -> Options {
    Options {
        regions: Regions::Only(vec![REGION.into(), "eu-west-1".into()]),
        keys: Keys::from_toml(CREDENTIALS).unwrap(),
        ..common::development(dir).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clients_with_bad_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start_with(options(dir.path()).await).await;

    let alice = server.client_as("AKIAALICE", "alice-secret", REGION);
    alice.list_clusters().send().await.unwrap();

    let wrong_secret = server.client_as("AKIAALICE", "not-the-secret", REGION);
    let err = wrong_secret.list_clusters().send().await.unwrap_err();
    assert_eq!(error_code(&err), "InvalidSignatureException");
    assert!(error_message(&err).contains("signature we calculated does not match"));

    let unknown = server.client_as("AKIAMALLORY", "x", REGION);
    let err = unknown.list_clusters().send().await.unwrap_err();
    assert_eq!(error_code(&err), "UnrecognizedClientException");

    // The development key is not accepted once a credentials file is given.
    let err = server.client().list_clusters().send().await.unwrap_err();
    assert_eq!(error_code(&err), "UnrecognizedClientException");

    let other_region = server.client_as("AKIAALICE", "alice-secret", "ap-south-1");
    let err = other_region.list_clusters().send().await.unwrap_err();
    assert_eq!(error_code(&err), "InvalidSignatureException");
    assert!(error_message(&err).contains("valid region"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_stale_and_replayed_requests_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start(dir.path()).await;
    let body = r#"{"clusterName":"guarded"}"#;
    let headers = vec![
        ("content-type".to_owned(), "application/x-amz-json-1.1".to_owned()),
        ("x-amz-target".to_owned(), format!("{TARGET}CreateCluster")),
    ];

    let unsigned = server.send(headers.clone(), body.into()).await;
    assert_eq!(unsigned.status, 403);
    assert_eq!(unsigned.json["__type"], "MissingAuthenticationTokenException");

    let stale = server.sign(
        &headers,
        body.as_bytes(),
        SystemTime::now() - Duration::from_secs(20 * 60),
    );
    let answer = server.send(stale, body.into()).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.json["__type"], "InvalidSignatureException");
    assert!(answer.json["message"]
        .as_str()
        .unwrap()
        .starts_with("Signature expired"));

    let future = server.sign(
        &headers,
        body.as_bytes(),
        SystemTime::now() + Duration::from_secs(20 * 60),
    );
    let answer = server.send(future, body.into()).await;
    assert!(answer.json["message"]
        .as_str()
        .unwrap()
        .starts_with("Signature not yet current"));

    let signed = server.sign(&headers, body.as_bytes(), SystemTime::now());
    let tampered_body = server.send(signed.clone(), br#"{"clusterName":"evil"}"#.to_vec()).await;
    assert_eq!(tampered_body.json["__type"], "InvalidSignatureException");
    let mut tampered_target = signed.clone();
    for (k, v) in &mut tampered_target {
        if k == "x-amz-target" {
            *v = format!("{TARGET}DeleteCluster");
        }
    }
    let answer = server.send(tampered_target, body.into()).await;
    assert_eq!(answer.json["__type"], "InvalidSignatureException");
    // Signed without the operation header, which is added afterwards.
    let mut added_target = server.sign(&headers[..1], body.as_bytes(), SystemTime::now());
    added_target.push(headers[1].clone());
    let answer = server.send(added_target, body.into()).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.json["__type"], "InvalidSignatureException");
    assert!(answer.json["message"].as_str().unwrap().contains("X-Amz-Target"));

    // None of it created anything; the genuine request does.
    let clusters = server.client().list_clusters().send().await.unwrap();
    assert!(clusters.cluster_arns().is_empty());
    let genuine = server.send(signed, body.into()).await;
    assert_eq!(genuine.status, 200, "{}", genuine.json);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_and_regions_never_see_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start_with(options(dir.path()).await).await;
    let alice = server.client_as("AKIAALICE", "alice-secret", REGION);
    let alice_eu = server.client_as("AKIAALICE", "alice-secret", "eu-west-1");
    let bob = server.client_as("AKIABOB", "bob-secret", REGION);

    let created = alice.create_cluster().cluster_name("shared-name").send().await.unwrap();
    assert_eq!(
        created.cluster().unwrap().cluster_arn(),
        Some("arn:aws:ecs:us-east-1:111111111111:cluster/shared-name")
    );
    for other in [&alice_eu, &bob] {
        assert!(other.list_clusters().send().await.unwrap().cluster_arns().is_empty());
        let described = other.describe_clusters().clusters("shared-name").send().await.unwrap();
        assert!(described.clusters().is_empty());
        assert_eq!(described.failures()[0].reason(), Some("MISSING"));
        // Naming it by its full ARN does not reach across either.
        let by_arn = other
            .describe_clusters()
            .clusters("arn:aws:ecs:us-east-1:111111111111:cluster/shared-name")
            .send()
            .await
            .unwrap();
        assert!(by_arn.clusters().is_empty());
    }
    let bobs = bob.create_cluster().cluster_name("shared-name").send().await.unwrap();
    assert_eq!(
        bobs.cluster().unwrap().cluster_arn(),
        Some("arn:aws:ecs:us-east-1:222222222222:cluster/shared-name")
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissions_and_cluster_limits_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start_with(options(dir.path()).await).await;
    let alice = server.client_as("AKIAALICE", "alice-secret", REGION);
    let agent = server.client_as("AKIAAGENT", "agent-secret", REGION);
    let ci = server.client_as("AKIACI", "ci-secret", REGION);
    alice.create_cluster().cluster_name("prod").send().await.unwrap();

    let err = agent
        .run_task()
        .cluster("prod")
        .task_definition("x")
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_code(&err), "AccessDeniedException");
    assert!(
        error_message(&err).contains("arn:aws:iam::111111111111:user/agent is not authorized to perform: ecs:RunTask")
    );
    agent
        .register_container_instance()
        .cluster("prod")
        .set_total_resources(Some(agent_resources()))
        .send()
        .await
        .unwrap();

    let err = ci
        .submit_task_state_change()
        .cluster("ci-1")
        .task("t")
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_code(&err), "AccessDeniedException");
    ci.create_cluster().cluster_name("ci-1").send().await.unwrap();
    let err = ci.describe_clusters().clusters("prod").send().await.unwrap_err();
    assert_eq!(error_code(&err), "AccessDeniedException");
    assert!(error_message(&err).contains("cluster/prod"));
    let err = ci.describe_clusters().send().await.unwrap_err();
    assert_eq!(
        error_code(&err),
        "AccessDeniedException",
        "no cluster named means 'default'"
    );
    common::register_definition(&ci, "job", "c", 8).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_scope_holds_for_resources_named_by_arn() {
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start_with(options(dir.path()).await).await;
    let alice = server.client_as("AKIAALICE", "alice-secret", REGION);
    let ci = server.client_as("AKIACI", "ci-secret", REGION);
    let owner = Tag::builder().key("owner").value("alice").build();
    let prod = alice
        .create_cluster()
        .cluster_name("prod")
        .tags(owner.clone())
        .send()
        .await
        .unwrap()
        .cluster
        .unwrap()
        .cluster_arn
        .unwrap();
    let instance = alice
        .register_container_instance()
        .cluster("prod")
        .set_total_resources(Some(agent_resources()))
        .tags(owner.clone())
        .send()
        .await
        .unwrap()
        .container_instance
        .unwrap()
        .container_instance_arn
        .unwrap();
    common::register_definition(&alice, "svc", "c", 8).await;
    let task = alice
        .run_task()
        .cluster("prod")
        .task_definition("svc")
        .tags(owner.clone())
        .send()
        .await
        .unwrap()
        .tasks()[0]
        .task_arn()
        .unwrap()
        .to_owned();
    ci.create_cluster().cluster_name("ci-1").send().await.unwrap();

    for arn in [&prod, &instance, &task] {
        let err = ci
            .tag_resource()
            .resource_arn(arn)
            .tags(Tag::builder().key("pwned").value("yes").build())
            .send()
            .await
            .unwrap_err();
        assert_eq!(error_code(&err), "AccessDeniedException", "TagResource {arn}");
        let err = ci
            .untag_resource()
            .resource_arn(arn)
            .tag_keys("owner")
            .send()
            .await
            .unwrap_err();
        assert_eq!(error_code(&err), "AccessDeniedException", "UntagResource {arn}");
        let err = ci.list_tags_for_resource().resource_arn(arn).send().await.unwrap_err();
        assert_eq!(error_code(&err), "AccessDeniedException", "ListTagsForResource {arn}");
        let tags = alice.list_tags_for_resource().resource_arn(arn).send().await.unwrap();
        assert_eq!(tags.tags(), std::slice::from_ref(&owner), "{arn} keeps its tags");
    }
    // Naming an allowed cluster does not open another's resources by ARN.
    let err = ci
        .describe_tasks()
        .cluster("ci-1")
        .tasks(&task)
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_code(&err), "AccessDeniedException");
    let err = ci.stop_task().cluster("ci-1").task(&task).send().await.unwrap_err();
    assert_eq!(error_code(&err), "AccessDeniedException");
    let err = ci
        .describe_container_instances()
        .cluster("ci-1")
        .container_instances(&instance)
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_code(&err), "AccessDeniedException");
    // Its own cluster's tags are its to change, and listings show only its clusters.
    let own = ci.describe_clusters().clusters("ci-1").send().await.unwrap().clusters()[0]
        .cluster_arn()
        .unwrap()
        .to_owned();
    ci.tag_resource()
        .resource_arn(&own)
        .tags(Tag::builder().key("team").value("ci").build())
        .send()
        .await
        .unwrap();
    let listed = ci.list_clusters().send().await.unwrap();
    assert_eq!(listed.cluster_arns(), std::slice::from_ref(&own));
    assert_eq!(alice.list_clusters().send().await.unwrap().cluster_arns().len(), 2);
    // Task definitions belong to no cluster: a cluster scope does not restrict them.
    let definition = ci
        .describe_task_definition()
        .task_definition("svc")
        .send()
        .await
        .unwrap()
        .task_definition
        .unwrap();
    ci.list_tags_for_resource()
        .resource_arn(definition.task_definition_arn().unwrap())
        .send()
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_limits_answer_like_aws_and_keep_data() {
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start_with(Options {
        throttle: Throttle::new(&[(
            Family::Write,
            Rate {
                per_second: 1,
                burst: 2,
            },
        )]),
        limits: Limits {
            max_body_bytes: 64 * 1024,
            ..Limits::default()
        },
        ..common::development(dir.path()).await
    })
    .await;
    let client = server.client();
    client.create_cluster().cluster_name("a").send().await.unwrap();
    client.create_cluster().cluster_name("b").send().await.unwrap();
    let err = client.create_cluster().cluster_name("c").send().await.unwrap_err();
    assert_eq!(error_code(&err), "ThrottlingException");
    // Reads have buckets of their own.
    assert_eq!(client.list_clusters().send().await.unwrap().cluster_arns().len(), 2);

    let huge = format!(r#"{{"clusterName":"{}"}}"#, "x".repeat(100 * 1024));
    let answer = server.raw(Some(&format!("{TARGET}CreateCluster")), &huge).await;
    assert_eq!(answer.status, 413);
    assert_eq!(answer.json["__type"], "RequestEntityTooLargeException");
    assert_eq!(client.list_clusters().send().await.unwrap().cluster_arns().len(), 2);
    server.stop().await;
}

/// `GET /events` signed with the given keys, as status and JSON body.
async fn read_events(server: &Running, path: &str, key: &str, secret: &str) -> (u16, serde_json::Value) {
    let url = format!("{}{path}", server.url);
    let mut request = reqwest::Client::new().get(&url);
    for (k, v) in common::fake_agent::sign_get(&url, b"", key, secret) {
        request = request.header(k, v);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_limited_to_some_clusters_reads_the_events_of_those() {
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start_with(options(dir.path()).await).await;
    let alice = server.client_as("AKIAALICE", "alice-secret", REGION);
    for cluster in ["ci-1", "prod"] {
        alice.create_cluster().cluster_name(cluster).send().await.unwrap();
        common::register_instance(&alice, cluster).await;
    }
    let clusters_of = |body: &serde_json::Value| -> Vec<String> {
        body["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                e["event"]["detail"]["clusterArn"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    let (status, everything) = read_events(&server, "/events", "AKIAALICE", "alice-secret").await;
    assert_eq!(status, 200);
    assert_eq!(clusters_of(&everything), ["ci-1", "prod"]);

    let (status, scoped) = read_events(&server, "/events", "AKIACI", "ci-secret").await;
    assert_eq!(status, 200, "{scoped}");
    assert_eq!(
        clusters_of(&scoped),
        ["ci-1"],
        "only the clusters the principal may see"
    );
    assert_eq!(
        scoped["lastSeq"], everything["lastSeq"],
        "the page still resumes after what it read"
    );

    let (status, refused) = read_events(&server, "/events?cluster=prod", "AKIACI", "ci-secret").await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["__type"], "AccessDeniedException");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_found_by_namespace_are_only_those_of_the_clusters_a_principal_may_see() {
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start_with(options(dir.path()).await).await;
    let alice = server.client_as("AKIAALICE", "alice-secret", REGION);
    let ci = server.client_as("AKIACI", "ci-secret", REGION);
    common::register_definition(&alice, "svc", "c", 8).await;
    for cluster in ["ci-1", "prod"] {
        alice.create_cluster().cluster_name(cluster).send().await.unwrap();
        alice
            .create_service()
            .cluster(cluster)
            .service_name("web")
            .task_definition("svc")
            .desired_count(0)
            .service_connect_configuration(
                aws_sdk_ecs::types::ServiceConnectConfiguration::builder()
                    .enabled(true)
                    .namespace("shop")
                    .build(),
            )
            .send()
            .await
            .unwrap();
    }
    let all = alice
        .list_services_by_namespace()
        .namespace("shop")
        .send()
        .await
        .unwrap();
    assert_eq!(all.service_arns().len(), 2);
    let scoped = ci.list_services_by_namespace().namespace("shop").send().await.unwrap();
    assert_eq!(
        scoped.service_arns(),
        ["arn:aws:ecs:us-east-1:111111111111:service/ci-1/web"],
        "a principal limited to ci-* sees no service of prod"
    );
    server.stop().await;
}
