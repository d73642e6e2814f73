//! The agent channels (ACS and TCS) with a fake agent that behaves like the real one: tasks
//! reach it, it reports them through SubmitTaskStateChange, stops follow, reconnections get what
//! was not acknowledged, and every message on the wire matches the models.

mod common;

use std::time::Duration;

use aws_sdk_ecs::types::{
    Connectivity, ContainerDefinition, ContainerInstanceField, HealthCheck, HealthStatus, NetworkMode, PortMapping,
};
use aws_sdk_ecs::Client;
use common::fake_agent::{acs_url, check_shape, open, tcs_url, FakeAgent, FakeTelemetry, PATIENCE};
use common::{agent_resources, register_instance, Running};
use ecsd::auth::Keys;
use ecsd::model::Model;
use ecsd::sessions::Timings;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const CLUSTER: &str = "edge";

struct Fixture {
    server: Running,
    client: Client,
    _dir: tempfile::TempDir,
}

/// Channel timings short enough for tests, derived from the heartbeat as the server derives
/// them.
fn quick() -> Timings {
    Timings {
        send_timeout: Duration::from_secs(2),
        ..Timings::with_heartbeat(Duration::from_millis(250), Duration::from_millis(500))
    }
}

/// The options of a server on `data_dir` with the quick channel timings.
async fn quick_options(data_dir: &std::path::Path) -> ecsd::server::Options {
    let mut options = common::development(data_dir).await;
    options.channels = quick();
    options
}

/// A server on `data_dir` with the quick channel timings.
async fn start_quick(data_dir: &std::path::Path) -> Running {
    Running::start_with(quick_options(data_dir).await).await
}

async fn fixture_with(keys: Option<Keys>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut options = quick_options(dir.path()).await;
    if let Some(keys) = keys {
        options.keys = keys;
    }
    let server = Running::start_with(options).await;
    let client = server.client();
    client.create_cluster().cluster_name(CLUSTER).send().await.unwrap();
    client
        .register_task_definition()
        .family("web")
        .network_mode(NetworkMode::Host)
        .cpu("512")
        .memory("1024")
        .container_definitions(
            ContainerDefinition::builder()
                .name("app")
                .image("nginx:latest")
                .cpu(256)
                .memory(256)
                .user("nobody")
                .docker_labels("team", "edge")
                .port_mappings(PortMapping::builder().container_port(8080).build())
                .health_check(
                    HealthCheck::builder()
                        .command("CMD-SHELL")
                        .command("true")
                        .interval(10)
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    Fixture {
        server,
        client,
        _dir: dir,
    }
}

async fn fixture() -> Fixture {
    fixture_with(None).await
}

impl Fixture {
    async fn register(&self) -> String {
        register_instance(&self.client, CLUSTER).await
    }

    async fn start_on(&self, instance: &str) -> String {
        let out = self
            .client
            .start_task()
            .cluster(CLUSTER)
            .task_definition("web")
            .container_instances(instance)
            .send()
            .await
            .unwrap();
        assert!(out.failures().is_empty(), "{:?}", out.failures());
        out.tasks()[0].task_arn().unwrap().to_owned()
    }

    async fn task(&self, arn: &str) -> aws_sdk_ecs::types::Task {
        self.client
            .describe_tasks()
            .cluster(CLUSTER)
            .tasks(arn)
            .send()
            .await
            .unwrap()
            .tasks()[0]
            .clone()
    }

    async fn instance(&self, arn: &str) -> aws_sdk_ecs::types::ContainerInstance {
        self.client
            .describe_container_instances()
            .cluster(CLUSTER)
            .container_instances(arn)
            .include(ContainerInstanceField::ContainerInstanceHealth)
            .send()
            .await
            .unwrap()
            .container_instances()[0]
            .clone()
    }

    /// Polls DescribeTasks until `f` holds.
    async fn wait_task(&self, arn: &str, what: &str, f: impl Fn(&aws_sdk_ecs::types::Task) -> bool) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let task = self.task(arn).await;
            if f(&task) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}: {task:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn wait_connected(&self, arn: &str, connected: bool) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while self.instance(arn).await.agent_connected() != connected {
            assert!(
                tokio::time::Instant::now() < deadline,
                "agentConnected never became {connected}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

#[tokio::test]
async fn run_task_reaches_the_agent_which_runs_and_stops_it() {
    let f = fixture().await;
    let instance = f.register().await;
    assert!(!f.instance(&instance).await.agent_connected());
    let agent = FakeAgent::connect(&f.server, CLUSTER, &instance).await;
    f.wait_connected(&instance, true).await;

    let run = f
        .client
        .run_task()
        .cluster(CLUSTER)
        .task_definition("web")
        .send()
        .await
        .unwrap();
    let arn = run.tasks()[0].task_arn().unwrap().to_owned();
    let payload = agent
        .wait_for("the task in a payload", |v| {
            v.of("PayloadMessage")
                .into_iter()
                .find(|m| m["tasks"][0]["arn"] == arn.as_str())
                .cloned()
        })
        .await;
    assert_eq!(payload["clusterArn"], f.task(&arn).await.cluster_arn().unwrap());
    assert_eq!(payload["containerInstanceArn"], instance.as_str());
    assert!(payload["messageId"].as_str().is_some_and(|id| !id.is_empty()));
    assert!(payload["seqNum"].as_i64().unwrap() >= 1);
    assert!(payload["generatedAt"].as_i64().unwrap() > 1_700_000_000_000);
    let task = &payload["tasks"][0];
    assert_eq!(task["desiredStatus"], "RUNNING");
    assert_eq!(task["family"], "web");
    assert_eq!(task["version"], "1");
    assert_eq!(task["networkMode"], "host");
    assert_eq!(task["launchType"], "EC2");
    assert_eq!(task["cpu"], 0.5);
    assert_eq!(task["memory"], 1024);
    let container = &task["containers"][0];
    assert_eq!(container["name"], "app");
    assert_eq!(container["image"], "nginx:latest");
    assert_eq!(container["cpu"], 256);
    assert_eq!(container["memory"], 256);
    assert_eq!(container["essential"], true);
    assert_eq!(container["portMappings"][0]["hostPort"], 8080);
    assert_eq!(container["healthCheckType"], "docker");
    assert_eq!(
        container["containerArn"],
        f.task(&arn).await.containers()[0].container_arn().unwrap()
    );
    let config: Value = serde_json::from_str(container["dockerConfig"]["config"].as_str().unwrap()).unwrap();
    assert_eq!(config["User"], "nobody");
    assert_eq!(config["Labels"]["team"], "edge");
    assert_eq!(config["Healthcheck"]["Test"], json!(["CMD-SHELL", "true"]));

    f.wait_task(&arn, "RUNNING", |t| t.last_status() == Some("RUNNING"))
        .await;
    let running = f.task(&arn).await;
    assert_eq!(running.connectivity(), Some(&Connectivity::Connected));

    f.client
        .stop_task()
        .cluster(CLUSTER)
        .task(&arn)
        .reason("done")
        .send()
        .await
        .unwrap();
    let stop_seq = agent
        .wait_for("the task again, to stop", |v| {
            v.of("PayloadMessage")
                .into_iter()
                .find(|m| m["tasks"][0]["arn"] == arn.as_str() && m["tasks"][0]["desiredStatus"] == "STOPPED")
                .map(|m| m["seqNum"].as_i64().unwrap())
        })
        .await;
    assert!(
        stop_seq > payload["seqNum"].as_i64().unwrap(),
        "sequence numbers increase"
    );
    f.wait_task(&arn, "STOPPED", |t| t.last_status() == Some("STOPPED"))
        .await;
    let stopped = f.task(&arn).await;
    assert_eq!(stopped.stop_code().map(|c| c.as_str()), Some("UserInitiated"));
    assert_eq!(stopped.stopped_reason(), Some("done"));

    // Heartbeats came and were answered; the manifest lists nothing once the task stopped.
    agent
        .wait_for("heartbeats", |v| (v.of("HeartbeatMessage").len() >= 2).then_some(()))
        .await;
    agent
        .wait_for("an empty manifest", |v| {
            v.of("TaskManifestMessage")
                .last()
                .filter(|m| m["tasks"].as_array().is_some_and(|t| t.is_empty()))
                .map(|_| ())
        })
        .await;
    assert!(agent.violations().is_empty());
    // Each task went out once per desired status: acknowledged payloads are not repeated.
    let sent = agent.wait_for("payloads", |v| Some(v.payload_tasks())).await;
    assert_eq!(
        sent,
        vec![(arn.clone(), "RUNNING".into()), (arn.clone(), "STOPPED".into())]
    );
    f.server.stop().await;
}

#[tokio::test]
async fn two_agents_each_get_their_own_tasks() {
    let f = fixture().await;
    let (a, b) = (f.register().await, f.register().await);
    let agent_a = FakeAgent::connect(&f.server, CLUSTER, &a).await;
    let agent_b = FakeAgent::connect(&f.server, CLUSTER, &b).await;
    let on_a = f.start_on(&a).await;
    let on_b = f.start_on(&b).await;
    for (agent, mine) in [(&agent_a, &on_a), (&agent_b, &on_b)] {
        agent.wait_for("its task", |v| v.task(mine).map(|_| ())).await;
    }
    f.wait_task(&on_a, "a RUNNING", |t| t.last_status() == Some("RUNNING"))
        .await;
    f.wait_task(&on_b, "b RUNNING", |t| t.last_status() == Some("RUNNING"))
        .await;
    let only = |agent: &FakeAgent| {
        agent
            .received()
            .iter()
            .filter(|m| m["type"] == "PayloadMessage")
            .flat_map(|m| m["message"]["tasks"].as_array().cloned().unwrap_or_default())
            .map(|t| t["arn"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(only(&agent_a), vec![on_a.clone()]);
    assert_eq!(only(&agent_b), vec![on_b.clone()]);
    f.server.stop().await;
}

#[tokio::test]
async fn what_was_not_acknowledged_is_sent_again_until_it_is() {
    let f = fixture().await;
    let instance = f.register().await;
    let first = FakeAgent::connect(&f.server, CLUSTER, &instance).await;
    first.acknowledge_payloads(false);
    let arn = f.start_on(&instance).await;
    // Unacknowledged, the task comes again on the same connection.
    first
        .wait_for("the task twice", |v| {
            (v.payload_tasks().iter().filter(|(a, _)| *a == arn).count() >= 2).then_some(())
        })
        .await;
    // Killed mid-stream; the next connection gets it again.
    first.kill().await;
    f.wait_connected(&instance, false).await;
    let second = FakeAgent::connect(&f.server, CLUSTER, &instance).await;
    second
        .wait_for("the task after reconnecting", |v| v.task(&arn).map(|_| ()))
        .await;
    f.wait_task(&arn, "RUNNING", |t| t.last_status() == Some("RUNNING"))
        .await;
    // Acknowledged now: a third connection is told only through the manifest.
    second
        .wait_for("a manifest after the ack", |v| {
            (!v.of("TaskManifestMessage").is_empty()).then_some(())
        })
        .await;
    second.kill().await;
    let third = FakeAgent::connect(&f.server, CLUSTER, &instance).await;
    let manifest = third
        .wait_for("a manifest", |v| {
            v.of("TaskManifestMessage").first().map(|m| (*m).clone())
        })
        .await;
    assert_eq!(manifest["tasks"][0]["taskArn"], arn.as_str());
    assert_eq!(manifest["tasks"][0]["desiredStatus"], "RUNNING");
    assert!(third.wait_for("payloads", |v| Some(v.payload_tasks())).await.is_empty());
    // A stop still reaches it.
    f.client.stop_task().cluster(CLUSTER).task(&arn).send().await.unwrap();
    third
        .wait_for("the stop", |v| {
            v.payload_tasks()
                .contains(&(arn.clone(), "STOPPED".to_owned()))
                .then_some(())
        })
        .await;
    f.server.stop().await;
}

#[tokio::test]
async fn connectivity_follows_the_connection() {
    let f = fixture().await;
    let instance = f.register().await;
    let agent = FakeAgent::connect(&f.server, CLUSTER, &instance).await;
    let arn = f.start_on(&instance).await;
    f.wait_task(&arn, "RUNNING", |t| t.last_status() == Some("RUNNING"))
        .await;
    assert_eq!(f.task(&arn).await.connectivity(), Some(&Connectivity::Connected));
    agent.kill().await;
    f.wait_connected(&instance, false).await;
    f.wait_task(&arn, "DISCONNECTED", |t| {
        t.connectivity() == Some(&Connectivity::Disconnected)
    })
    .await;
    let _back = FakeAgent::connect(&f.server, CLUSTER, &instance).await;
    f.wait_connected(&instance, true).await;
    f.wait_task(&arn, "CONNECTED", |t| {
        t.connectivity() == Some(&Connectivity::Connected)
    })
    .await;
    f.server.stop().await;
}

#[tokio::test]
async fn the_versions_an_agent_connects_with_are_its_version_info() {
    let f = fixture().await;
    let instance = f.register().await;
    assert!(f.instance(&instance).await.version_info().is_none());
    let agent = FakeAgent::connect(&f.server, CLUSTER, &instance).await;
    f.wait_connected(&instance, true).await;
    let described = f.instance(&instance).await;
    let info = described.version_info().expect("versionInfo from the ACS query");
    assert_eq!(info.agent_version(), Some("1.105.0"));
    assert_eq!(info.agent_hash(), Some("fake"));
    assert_eq!(info.docker_version(), Some("DockerVersion: 28.2.2"));
    agent.kill().await;
    f.wait_connected(&instance, false).await;
    let before = f.instance(&instance).await.version();
    // The same versions again change nothing but the connection.
    let _back = FakeAgent::connect(&f.server, CLUSTER, &instance).await;
    f.wait_connected(&instance, true).await;
    let again = f.instance(&instance).await;
    assert_eq!(again.version(), before + 1, "only agentConnected moved");
    assert_eq!(again.version_info(), Some(info));
    // A re-registration that carries no versions keeps them.
    f.client
        .register_container_instance()
        .cluster(CLUSTER)
        .container_instance_arn(&instance)
        .set_total_resources(Some(agent_resources()))
        .send()
        .await
        .unwrap();
    assert_eq!(f.instance(&instance).await.version_info(), Some(info));
    f.server.stop().await;
}

#[tokio::test]
async fn an_agent_that_goes_silent_is_dropped() {
    let f = fixture().await;
    let instance = f.register().await;
    let agent = FakeAgent::connect(&f.server, CLUSTER, &instance).await;
    f.wait_connected(&instance, true).await;
    agent.freeze();
    f.wait_connected(&instance, false).await;
    // ecsd kept serving all along, and the instance can connect again.
    let again = FakeAgent::connect(&f.server, CLUSTER, &instance).await;
    f.wait_connected(&instance, true).await;
    again
        .wait_for("a heartbeat", |v| (!v.of("HeartbeatMessage").is_empty()).then_some(()))
        .await;
    agent.kill().await;
    f.server.stop().await;
}

#[tokio::test]
async fn a_newer_connection_of_the_same_instance_takes_over() {
    let f = fixture().await;
    let instance = f.register().await;
    let old = FakeAgent::connect(&f.server, CLUSTER, &instance).await;
    let new = FakeAgent::connect(&f.server, CLUSTER, &instance).await;
    old.wait_for("the old connection to close", |v| v.closed().then_some(()))
        .await;
    let arn = f.start_on(&instance).await;
    new.wait_for("the task on the new connection", |v| v.task(&arn).map(|_| ()))
        .await;
    assert!(f.instance(&instance).await.agent_connected());
    f.server.stop().await;
}

#[tokio::test]
async fn stop_verification_confirms_only_what_ecsd_does_not_want_running() {
    let f = fixture().await;
    let instance = f.register().await;
    let agent = FakeAgent::connect(&f.server, CLUSTER, &instance).await;
    let wanted = f.start_on(&instance).await;
    agent.wait_for("the task", |v| v.task(&wanted).map(|_| ())).await;
    // A task the agent runs that ecsd never placed: the manifest leads the agent to offer it
    // for stopping, and ecsd confirms.
    let stray = format!("arn:aws:ecs:us-east-1:123456789012:task/{CLUSTER}/0123456789abcdef0123456789abcdef");
    agent.adopt(&stray);
    agent
        .wait_for("the stray stopped", |v| {
            v.task(&stray).filter(|t| t.stopped).map(|_| ())
        })
        .await;
    assert!(
        !agent
            .wait_for("the wanted task", |v| v.task(&wanted).cloned())
            .await
            .stopped
    );
    // Offered directly, a task ecsd wants running on this instance is not confirmed.
    agent.send(
        "TaskStopVerificationMessage",
        json!({"messageId": "verify-1", "stopCandidates": [{"taskArn": wanted}, {"taskArn": stray}]}),
    );
    let ack = agent
        .wait_for("the verification ack", |v| {
            v.of("TaskStopVerificationAck")
                .into_iter()
                .find(|m| m["messageId"] == "verify-1")
                .cloned()
        })
        .await;
    assert_eq!(
        ack["stopTasks"],
        json!([{"taskArn": stray, "taskClusterArn": f.task(&wanted).await.cluster_arn().unwrap(), "desiredStatus": "STOPPED"}])
    );
    f.server.stop().await;
}

#[tokio::test]
async fn a_deregistered_instance_is_disconnected_and_refused() {
    let f = fixture().await;
    let instance = f.register().await;
    let agent = FakeAgent::connect(&f.server, CLUSTER, &instance).await;
    f.wait_connected(&instance, true).await;
    f.client
        .deregister_container_instance()
        .cluster(CLUSTER)
        .container_instance(&instance)
        .send()
        .await
        .unwrap();
    agent
        .wait_for("the connection to close", |v| v.closed().then_some(()))
        .await;
    let url = acs_url(&f.server, CLUSTER, &instance).await;
    let (status, body) = open(&url, "test", "test").await.expect_err("refused");
    assert_eq!(status, 400);
    assert_eq!(body["type"], "InactiveInstanceException");
    assert!(body["message"]["message"].as_str().unwrap().contains("deregistered"));
    f.server.stop().await;
}

#[tokio::test]
async fn upgrades_are_refused_with_the_errors_the_agent_decodes() {
    let keys = Keys::from_toml(
        r#"
        [[principals]]
        name = "dev"
        access_key_id = "test"
        secret_access_key = "test"
        account_id = "123456789012"
        permissions = ["admin"]

        [[principals]]
        name = "reader"
        access_key_id = "READER"
        secret_access_key = "reader-secret"
        account_id = "123456789012"
        permissions = ["ecs:Describe*"]
        "#,
    )
    .unwrap();
    let f = fixture_with(Some(keys)).await;
    let instance = f.register().await;
    let url = acs_url(&f.server, CLUSTER, &instance).await;

    // Refusals are the model's exceptions, framed as the agent decodes them.
    let refused = |result: Result<_, (u16, Value)>| {
        let (status, body) = result.expect_err("the upgrade is refused");
        check_shape(Model::acs(), &body).unwrap();
        (status, body)
    };
    let (status, body) = refused(open(&url, "test", "wrong-secret").await);
    assert_eq!((status, body["type"].as_str()), (403, Some("AccessDeniedException")));
    assert!(
        body["message"]["message"].as_str().unwrap().contains("signature"),
        "{body}"
    );
    let (status, body) = refused(open(&url, "READER", "reader-secret").await);
    assert_eq!((status, body["type"].as_str()), (403, Some("AccessDeniedException")));
    assert!(
        body["message"]["message"].as_str().unwrap().contains("ecs:Poll"),
        "{body}"
    );

    let unknown = url.replace(
        &instance.rsplit('/').next().unwrap().to_owned(),
        "ffffffffffffffffffffffffffffffff",
    );
    let (status, body) = refused(open(&unknown, "test", "test").await);
    assert_eq!((status, body["type"].as_str()), (400, Some("InvalidInstanceException")));
    let no_cluster = url.replace("clusterArn=edge", "clusterArn=nowhere");
    let (status, body) = refused(open(&no_cluster, "test", "test").await);
    assert_eq!((status, body["type"].as_str()), (400, Some("InvalidClusterException")));
    let missing = url.replace("containerInstanceArn=", "instance=");
    let (status, body) = refused(open(&missing, "test", "test").await);
    assert_eq!((status, body["type"].as_str()), (400, Some("BadRequestException")));
    assert!(body["message"]["message"]
        .as_str()
        .unwrap()
        .contains("containerInstanceArn"));

    // A plain GET, signed, is not an upgrade.
    let headers = common::fake_agent::sign_get(&url, b"", "test", "test");
    let mut request = reqwest::Client::new().get(url.replacen("ws://", "http://", 1));
    for (k, v) in headers.into_iter().filter(|(k, _)| k != "Host") {
        request = request.header(k, v);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "BadRequestException");

    // The TCS upgrade is checked the same way.
    let tcs = tcs_url(&f.server, CLUSTER, &instance).await;
    let (status, body) = refused(open(&tcs, "READER", "reader-secret").await);
    assert_eq!((status, body["type"].as_str()), (403, Some("AccessDeniedException")));
    assert!(body["message"]["message"]
        .as_str()
        .unwrap()
        .contains("ecs:StartTelemetrySession"));
    f.server.stop().await;
}

#[tokio::test]
async fn nothing_an_agent_sends_breaks_the_session_or_the_server() {
    let f = fixture().await;
    let instance = f.register().await;
    let agent = FakeAgent::connect(&f.server, CLUSTER, &instance).await;
    agent.send_raw(Message::Text("not json".into()));
    agent.send_raw(Message::Text(r#"{"type":"Nonsense","message":{}}"#.into()));
    agent.send_raw(Message::Text(
        r#"{"type":"AckRequest","message":{"messageId":42}}"#.into(),
    ));
    agent.send_raw(Message::Text(
        r#"{"type":"AckRequest","message":{"messageId":"never-sent"}}"#.into(),
    ));
    agent.send_raw(Message::Binary(vec![0xff, 0xfe, 0x00].into()));
    agent.send_raw(Message::Text(
        r#"{"type":"TaskStopVerificationMessage","message":{"stopCandidates":"all"}}"#.into(),
    ));
    let refusals = agent
        .wait_for("a refusal of each bad message", |v| {
            let bad = v.of("BadRequestException");
            (bad.len() >= 5).then(|| {
                bad.iter()
                    .map(|m| m["message"].as_str().unwrap().to_owned())
                    .collect::<Vec<_>>()
            })
        })
        .await;
    assert!(
        refusals.iter().any(|m| m.contains("Unknown message type 'Nonsense'")),
        "{refusals:?}"
    );
    assert!(refusals.iter().any(|m| m.contains("messageId")), "{refusals:?}");
    assert!(refusals.iter().any(|m| m.contains("stopCandidates")), "{refusals:?}");
    // The session carries on: a task still arrives.
    let arn = f.start_on(&instance).await;
    agent.wait_for("the task", |v| v.task(&arn).map(|_| ())).await;

    // A message beyond the size limit closes that connection, and only that one.
    let other = f.register().await;
    let big = FakeAgent::connect(&f.server, CLUSTER, &other).await;
    big.send_raw(Message::Text("x".repeat(3 * 1024 * 1024).into()));
    big.wait_for("the oversized connection to close", |v| v.closed().then_some(()))
        .await;
    f.wait_task(&arn, "RUNNING", |t| t.last_status() == Some("RUNNING"))
        .await;
    // The first task holds its host port until it stops.
    f.client.stop_task().cluster(CLUSTER).task(&arn).send().await.unwrap();
    f.wait_task(&arn, "STOPPED", |t| t.last_status() == Some("STOPPED"))
        .await;
    let second = f.start_on(&instance).await;
    agent.wait_for("another task", |v| v.task(&second).map(|_| ())).await;
    f.server.stop().await;
}

#[tokio::test]
async fn telemetry_is_acknowledged_and_health_recorded() {
    let f = fixture().await;
    let instance = f.register().await;
    let _agent = FakeAgent::connect(&f.server, CLUSTER, &instance).await;
    let arn = f.start_on(&instance).await;
    f.wait_task(&arn, "RUNNING", |t| t.last_status() == Some("RUNNING"))
        .await;
    let cluster_arn = f.task(&arn).await.cluster_arn().unwrap().to_owned();
    let mut tcs = FakeTelemetry::connect(&f.server, CLUSTER, &instance).await;

    let reply = tcs
        .publish(
            "PublishMetricsRequest",
            json!({
                "metadata": {"cluster": CLUSTER, "containerInstance": instance, "messageId": "m1", "idle": false, "fin": true},
                "taskMetrics": [{"taskArn": arn, "taskDefinitionFamily": "web", "taskDefinitionVersion": "1",
                    "containerMetrics": [{"containerName": "app",
                        "cpuStatsSet": {"min": 0.5, "max": 1.5, "sampleCount": 3, "sum": 3.0},
                        "memoryStatsSet": {"min": 10.0, "max": 12.0, "sampleCount": 3, "sum": 33.0}}]}],
                "timestamp": 1_764_000_000.5,
            }),
        )
        .await;
    assert_eq!(reply["type"], "AckPublishMetric");

    let reply = tcs
        .publish(
            "PublishHealthRequest",
            json!({
                "metadata": {"cluster": CLUSTER, "containerInstance": instance, "messageId": "h1", "fin": true},
                "tasks": [{"taskArn": arn, "clusterArn": cluster_arn, "taskDefinitionFamily": "web", "taskDefinitionVersion": "1",
                    "containers": [{"containerName": "app", "healthStatus": "HEALTHY", "statusSince": 1_764_000_000.0}]}],
                "timestamp": 1_764_000_001.0,
            }),
        )
        .await;
    assert_eq!(reply["type"], "AckPublishHealth");
    let task = f.task(&arn).await;
    assert_eq!(task.health_status(), Some(&HealthStatus::Healthy));
    assert_eq!(task.containers()[0].health_status(), Some(&HealthStatus::Healthy));

    let reply = tcs
        .publish(
            "PublishInstanceStatusRequest",
            json!({
                "metadata": {"cluster": CLUSTER, "containerInstance": instance, "requestId": "r1"},
                "statuses": [{"type": "CONTAINER_RUNTIME", "status": "OK", "lastUpdated": 1_764_000_002.0, "lastStatusChange": 1_764_000_000.0}],
                "timestamp": 1_764_000_002.0,
            }),
        )
        .await;
    assert_eq!(reply["type"], "AckPublishInstanceStatus");
    let described = f.instance(&instance).await;
    let health = described.health_status().expect("health is shown when asked for");
    assert_eq!(health.overall_status().map(|s| s.as_str()), Some("OK"));
    assert_eq!(
        health.details()[0].r#type().map(|t| t.as_str()),
        Some("CONTAINER_RUNTIME")
    );

    // Wrongly signed, malformed or mistyped messages are refused, and the channel stays open.
    let forged = tcs.framed("PublishMetricsRequest", json!({"metadata": {}}), "wrong-secret");
    let reply = tcs.send_bytes(forged).await;
    assert_eq!(reply["type"], "BadRequestException");
    assert!(
        reply["message"]["message"].as_str().unwrap().contains("signature"),
        "{reply}"
    );
    let reply = tcs.send_bytes(b"{\"type\":\"PublishMetricsRequest\"}".to_vec()).await;
    assert_eq!(reply["type"], "BadRequestException");
    let mistyped = tcs.framed("PublishHealthRequest", json!({"tasks": "all"}), "test");
    let reply = tcs.send_bytes(mistyped).await;
    assert_eq!(reply["type"], "InvalidParameterException");
    assert!(
        reply["message"]["message"].as_str().unwrap().contains("tasks"),
        "{reply}"
    );
    // Heartbeats keep coming.
    loop {
        if tcs.next().await["type"] == "HeartbeatMessage" {
            break;
        }
    }
    f.server.stop().await;
}

/// The cluster with a task definition `job` and one registered instance (returned).
async fn job_cluster(client: &Client) -> String {
    client.create_cluster().cluster_name(CLUSTER).send().await.unwrap();
    common::register_definition(client, "job", "main", 64).await;
    register_instance(client, CLUSTER).await
}

#[tokio::test]
async fn deliveries_and_sequence_numbers_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let start = || start_quick(dir.path());
    let server = start().await;
    let client = server.client();
    let instance = job_cluster(&client).await;
    let agent = FakeAgent::connect(&server, CLUSTER, &instance).await;
    agent.acknowledge_payloads(false);
    let arn = client
        .start_task()
        .cluster(CLUSTER)
        .task_definition("job")
        .container_instances(&instance)
        .send()
        .await
        .unwrap()
        .tasks()[0]
        .task_arn()
        .unwrap()
        .to_owned();
    let first_seq = agent
        .wait_for("the task", |v| {
            v.of("PayloadMessage").last().map(|m| m["seqNum"].as_i64().unwrap())
        })
        .await;
    agent.kill().await;
    server.stop().await;

    // Not acknowledged before the restart: sent again after it, numbered after what came before.
    let server = start().await;
    let agent = FakeAgent::connect(&server, CLUSTER, &instance).await;
    let again = agent
        .wait_for("the task after the restart", |v| {
            v.of("PayloadMessage")
                .into_iter()
                .find(|m| m["tasks"][0]["arn"] == arn.as_str())
                .map(|m| m["seqNum"].as_i64().unwrap())
        })
        .await;
    assert!(again > first_seq, "{again} follows {first_seq}");
    let acked_manifest = agent
        .wait_for("a manifest after the acknowledgement", |v| {
            v.of("TaskManifestMessage")
                .last()
                .map(|m| m["timeline"].as_i64().unwrap())
        })
        .await;
    agent.kill().await;
    server.stop().await;

    // Acknowledged before this restart: only the manifest mentions it.
    let server = start().await;
    let agent = FakeAgent::connect(&server, CLUSTER, &instance).await;
    let manifest = agent
        .wait_for("a manifest", |v| {
            v.of("TaskManifestMessage").first().map(|m| (*m).clone())
        })
        .await;
    assert_eq!(manifest["tasks"][0]["taskArn"], arn.as_str());
    assert!(manifest["timeline"].as_i64().unwrap() > acked_manifest);
    assert!(agent.wait_for("payloads", |v| Some(v.payload_tasks())).await.is_empty());
    server.stop().await;
}

/// With a shared PostgreSQL store (ECSD_TEST_POSTGRES), a task placed through one process
/// reaches an agent connected to another, and its stop too.
#[tokio::test]
async fn a_task_placed_through_another_process_reaches_the_agent() {
    if std::env::var("ECSD_TEST_POSTGRES").is_err() {
        eprintln!("ECSD_TEST_POSTGRES is not set: one process only, nothing to test here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let start = || start_quick(dir.path());
    let (near, far) = (start().await, start().await);
    let client = far.client();
    let instance = job_cluster(&client).await;
    let agent = FakeAgent::connect(&near, CLUSTER, &instance).await;
    let arn = client
        .run_task()
        .cluster(CLUSTER)
        .task_definition("job")
        .send()
        .await
        .unwrap()
        .tasks()[0]
        .task_arn()
        .unwrap()
        .to_owned();
    agent.wait_for("the task", |v| v.task(&arn).map(|_| ())).await;
    client.stop_task().cluster(CLUSTER).task(&arn).send().await.unwrap();
    agent
        .wait_for("the stop", |v| v.task(&arn).filter(|t| t.stopped).map(|_| ()))
        .await;
    let stopped = client
        .describe_tasks()
        .cluster(CLUSTER)
        .tasks(&arn)
        .send()
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut last = stopped.tasks()[0].last_status().map(str::to_owned);
    while last.as_deref() != Some("STOPPED") {
        assert!(tokio::time::Instant::now() < deadline, "never STOPPED: {last:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
        let t = client
            .describe_tasks()
            .cluster(CLUSTER)
            .tasks(&arn)
            .send()
            .await
            .unwrap();
        last = t.tasks()[0].last_status().map(str::to_owned);
    }
    near.stop().await;
    far.stop().await;
}

#[tokio::test]
async fn a_graceful_stop_records_its_agents_as_disconnected() {
    let dir = tempfile::tempdir().unwrap();
    let start = || start_quick(dir.path());
    let server = start().await;
    let client = server.client();
    let instance = job_cluster(&client).await;
    let agent = FakeAgent::connect(&server, CLUSTER, &instance).await;
    agent
        .wait_for("a heartbeat", |v| (!v.of("HeartbeatMessage").is_empty()).then_some(()))
        .await;
    server.stop().await;
    agent
        .wait_for("the connection to close", |v| v.closed().then_some(()))
        .await;

    let server = start().await;
    let described = server
        .client()
        .describe_container_instances()
        .cluster(CLUSTER)
        .container_instances(&instance)
        .send()
        .await
        .unwrap();
    assert!(!described.container_instances()[0].agent_connected());
    server.stop().await;
}

#[tokio::test]
async fn with_fargate_on_agents_a_fargate_task_reaches_the_pools_agent_in_bridge_mode() {
    use aws_sdk_ecs::types::{AwsVpcConfiguration, Compatibility, LaunchType, NetworkConfiguration};
    use ecsd::server::POOL_CLUSTER;

    let dir = tempfile::tempdir().unwrap();
    let mut options = quick_options(dir.path()).await;
    options.fargate.pool = Some(POOL_CLUSTER.into());
    let server = Running::start_with(options).await;
    let client = server.client();
    client.create_cluster().cluster_name(POOL_CLUSTER).send().await.unwrap();
    client.create_cluster().cluster_name("apps").send().await.unwrap();
    let instance = register_instance(&client, POOL_CLUSTER).await;
    let agent = FakeAgent::connect(&server, POOL_CLUSTER, &instance).await;
    client
        .register_task_definition()
        .family("api")
        .network_mode(NetworkMode::Awsvpc)
        .requires_compatibilities(Compatibility::Fargate)
        .cpu("256")
        .memory("512")
        .container_definitions(
            ContainerDefinition::builder()
                .name("api")
                .image("nginx:latest")
                .port_mappings(PortMapping::builder().container_port(8080).build())
                .build(),
        )
        .send()
        .await
        .unwrap();
    let run = client
        .run_task()
        .cluster("apps")
        .task_definition("api")
        .launch_type(LaunchType::Fargate)
        .network_configuration(
            NetworkConfiguration::builder()
                .awsvpc_configuration(
                    AwsVpcConfiguration::builder()
                        .subnets("subnet-0a0a0a0a")
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    let arn = run.tasks()[0].task_arn().unwrap().to_owned();
    let id = arn.rsplit('/').next().unwrap().to_owned();
    let payload = agent
        .wait_for("the carrier in a payload", |v| {
            v.of("PayloadMessage")
                .into_iter()
                .find(|m| m["tasks"][0]["arn"].as_str().is_some_and(|a| a.ends_with(&id)))
                .cloned()
        })
        .await;
    let carrier = &payload["tasks"][0];
    assert!(carrier["arn"]
        .as_str()
        .unwrap()
        .contains(&format!(":task/{POOL_CLUSTER}/")));
    assert_eq!(carrier["networkMode"], "bridge");
    assert_eq!(carrier["containers"][0]["portMappings"][0]["hostPort"], 0);
    let described = |cluster: &'static str, task: String| {
        let client = client.clone();
        async move {
            client
                .describe_tasks()
                .cluster(cluster)
                .tasks(task)
                .send()
                .await
                .unwrap()
                .tasks()[0]
                .clone()
        }
    };
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while described("apps", arn.clone()).await.last_status() != Some("RUNNING") {
        assert!(tokio::time::Instant::now() < deadline, "the Fargate task never ran");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    client.stop_task().cluster("apps").task(&arn).send().await.unwrap();
    agent
        .wait_for("the carrier again, to stop", |v| {
            v.of("PayloadMessage")
                .into_iter()
                .find(|m| m["tasks"][0]["arn"] == carrier["arn"] && m["tasks"][0]["desiredStatus"] == "STOPPED")
                .map(|_| ())
        })
        .await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while described("apps", arn.clone()).await.last_status() != Some("STOPPED") {
        assert!(tokio::time::Instant::now() < deadline, "the Fargate task never stopped");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(described(POOL_CLUSTER, id).await.last_status(), Some("STOPPED"));
    assert!(agent.violations().is_empty(), "{:?}", agent.violations());
    server.stop().await;
}
