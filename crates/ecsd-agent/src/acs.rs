//! The agent's side of ACS, as the Go agent speaks it: the channel's URL (query values encoded
//! as Go's `url.Values` does), the `{"type", "message"}` envelope of every frame, and the
//! replies an agent sends to what it receives.

use serde_json::{json, Value};

/// The websocket URL of a channel: `endpoint` as DiscoverPollEndpoint gives it (http or https),
/// `/ws`, and the query the agent sends.
pub fn channel_url(endpoint: &str, query: &[(&str, &str)]) -> String {
    let endpoint = endpoint
        .replacen("https://", "wss://", 1)
        .replacen("http://", "ws://", 1);
    let encoded: Vec<String> = query.iter().map(|(k, v)| format!("{k}={}", query_value(v))).collect();
    format!("{}/ws?{}", endpoint.trim_end_matches('/'), encoded.join("&"))
}

/// Encodes a query value as Go's `url.Values` does: a space becomes `+`, everything but the
/// unreserved characters is percent-encoded.
pub fn query_value(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            b' ' => "+".to_owned(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A frame: a message of the ACS model with its shape's name.
pub fn envelope(kind: &str, message: Value) -> Value {
    json!({"type": kind, "message": message})
}

/// The shape's name and the message of a frame's text (`None` if it is no envelope).
pub fn parse(text: &str) -> Option<(String, Value)> {
    let mut envelope: Value = serde_json::from_str(text).ok()?;
    let kind = envelope.get("type")?.as_str()?.to_owned();
    Some((kind, envelope.get_mut("message").map(Value::take).unwrap_or_default()))
}

/// The `AckRequest` for a payload or task manifest.
pub fn ack_request(message: &Value) -> Value {
    json!({
        "cluster": message["clusterArn"],
        "containerInstance": message["containerInstanceArn"],
        "messageId": message["messageId"],
    })
}

/// The `HeartbeatAckRequest` for a heartbeat.
pub fn heartbeat_ack(message: &Value) -> Value {
    json!({"messageId": message["messageId"]})
}

/// The `TaskStopVerificationMessage` for a manifest: the tasks the agent runs that the
/// manifest does not list as RUNNING, which it asks leave to stop.
pub fn stop_verification(manifest: &Value, candidates: &[String]) -> Value {
    let candidates: Vec<Value> = candidates
        .iter()
        .map(|arn| json!({"taskArn": arn, "desiredStatus": "STOPPED"}))
        .collect();
    json!({"messageId": manifest["messageId"], "stopCandidates": candidates})
}

/// The tasks a manifest lists, with the desired status of each.
pub fn manifest_tasks(manifest: &Value) -> Vec<(String, String)> {
    manifest["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            (
                t["taskArn"].as_str().unwrap_or_default().to_owned(),
                t["desiredStatus"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ecsd::model::Model;

    #[test]
    fn channel_urls_are_built_as_the_go_agent_builds_them() {
        let url = channel_url(
            "http://127.0.0.1:8080/acs/",
            &[("dockerVersion", "DockerVersion: 28.2.2"), ("seqNum", "1")],
        );
        assert_eq!(
            url,
            "ws://127.0.0.1:8080/acs/ws?dockerVersion=DockerVersion%3A+28.2.2&seqNum=1"
        );
        assert!(channel_url("https://h/acs", &[]).starts_with("wss://h/acs/ws?"));
    }

    #[test]
    fn replies_are_messages_of_the_model() {
        let payload = json!({"clusterArn": "c", "containerInstanceArn": "i", "messageId": "m"});
        for (kind, message) in [
            ("AckRequest", ack_request(&payload)),
            ("HeartbeatAckRequest", heartbeat_ack(&payload)),
            (
                "TaskStopVerificationMessage",
                stop_verification(&payload, &["arn:t".to_owned()]),
            ),
        ] {
            Model::acs()
                .check_sent(kind, &message)
                .expect("a message of the ACS model");
        }
        let (kind, message) = parse(&envelope("AckRequest", ack_request(&payload)).to_string()).unwrap();
        assert_eq!((kind.as_str(), &message["messageId"]), ("AckRequest", &json!("m")));
        assert_eq!(parse("not json"), None);
    }
}
