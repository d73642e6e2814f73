//! `ecsd events tail`: the event stream (`GET /events/stream`, server-sent events) printed a
//! line per event, resuming after the last event seen whenever the connection drops.

use std::time::Duration;

use http_body_util::BodyExt;

use crate::client::{ClientError, EcsClient};

/// Prints the events after `after` (of `cluster`, or of every cluster) until the server refuses
/// the stream.
pub async fn run(client: &EcsClient, cluster: Option<&str>, after: i64) -> Result<(), ClientError> {
    let path = match cluster {
        Some(cluster) => format!("/events/stream?cluster={cluster}"),
        None => "/events/stream".to_owned(),
    };
    let mut after = after;
    loop {
        let last = after.to_string();
        match client.get(&path, &[("last-event-id", &last)]).await {
            Ok(response) if response.status().is_success() => {
                let mut body = response.into_body();
                let mut buffer = String::new();
                while let Some(Ok(frame)) = body.frame().await {
                    let Ok(data) = frame.into_data() else { continue };
                    buffer.push_str(&String::from_utf8_lossy(&data));
                    while let Some(end) = buffer.find("\n\n") {
                        let block: String = buffer.drain(..end + 2).collect();
                        if let Some((seq, line)) = summarize(&block) {
                            after = seq;
                            println!("{line}");
                        }
                    }
                }
            }
            Ok(response) => {
                let status = response.status();
                let bytes = response
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                return Err(ClientError::Service {
                    code: status.to_string(),
                    message: String::from_utf8_lossy(&bytes).into_owned(),
                    status: status.as_u16(),
                });
            }
            Err(e) => eprintln!("ecsd: {e}; reconnecting"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// One line for an SSE block: sequence, time, kind, resource and its status.
fn summarize(block: &str) -> Option<(i64, String)> {
    let mut seq = None;
    let mut data = String::new();
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("id:") {
            seq = v.trim().parse::<i64>().ok();
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.trim_start());
        }
    }
    let seq = seq?;
    let event: serde_json::Value = serde_json::from_str(&data).ok()?;
    let detail = &event["detail"];
    let status = match (detail["lastStatus"].as_str(), detail["status"].as_str()) {
        (Some(last), _) => format!(
            "{last} (desired {}) v{}",
            detail["desiredStatus"].as_str().unwrap_or("-"),
            detail["version"]
        ),
        (None, Some(status)) => format!("{status} v{}", detail["version"]),
        _ => String::new(),
    };
    Some((
        seq,
        format!(
            "{seq}\t{}\t{}\t{}\t{status}",
            event["time"].as_str().unwrap_or("-"),
            event["detail-type"].as_str().unwrap_or("-"),
            event["resources"][0].as_str().unwrap_or("-"),
        ),
    ))
}
