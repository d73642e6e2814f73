//! The AWS JSON 1.1 protocol as raw requests: each way of getting a request wrong has its own
//! answer, every answer carries a request id, and nothing is a 500.

mod common;

use common::{Running, TARGET};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_errors_are_distinct_client_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start(dir.path()).await;
    let cases: [(Option<String>, &str, &str, &str); 6] = [
        (None, "{}", "UnknownOperationException", "Missing X-Amz-Target"),
        (
            Some(format!("{TARGET}LaunchRocket")),
            "{}",
            "UnknownOperationException",
            "LaunchRocket",
        ),
        (
            Some("Other_20200101.ListClusters".into()),
            "{}",
            "UnknownOperationException",
            "does not name",
        ),
        (
            Some(format!("{TARGET}ListClusters")),
            "{\"maxResults\": ",
            "SerializationException",
            "not valid JSON",
        ),
        (
            Some(format!("{TARGET}ListClusters")),
            "{\"maxResults\": \"ten\"}",
            "SerializationException",
            "'maxResults'",
        ),
        (
            Some(format!("{TARGET}DescribeTasks")),
            "{}",
            "InvalidParameterException",
            "'tasks'",
        ),
    ];
    for (target, body, code, fragment) in cases {
        let common::Answer { status, headers, json } = server.raw(target.as_deref(), body).await;
        assert_eq!(status, 400, "{target:?} {body}");
        assert_eq!(json["__type"], code, "{target:?} {body}: {json}");
        assert!(json["message"].as_str().unwrap().contains(fragment), "{json}");
        assert_eq!(headers["x-amzn-errortype"], code);
        assert!(headers.contains_key("x-amzn-requestid"));
        assert_eq!(headers["content-type"], "application/x-amz-json-1.1");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_carry_ids_and_timestamps_are_epoch_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start(dir.path()).await;
    let health = reqwest::get(format!("{}/health", server.url)).await.unwrap();
    assert_eq!(health.status(), 200);

    let created = server.raw(Some(&format!("{TARGET}CreateCluster")), "{}").await;
    assert_eq!(created.status, 200);
    assert!(!created.headers["x-amzn-requestid"].is_empty());
    let json = server
        .raw(
            Some(&format!("{TARGET}RegisterTaskDefinition")),
            r#"{"family":"f","containerDefinitions":[{"name":"c","image":"i","memory":8}],"unknownMember":1}"#,
        )
        .await
        .json;
    let registered_at = &json["taskDefinition"]["registeredAt"];
    assert!(registered_at.is_f64() || registered_at.is_u64(), "{json}");
    assert!(json["taskDefinition"].get("unknownMember").is_none());
    server.stop().await;
}
