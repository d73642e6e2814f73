//! `ecsd events tail`: the event stream (`GET /events/stream`, server-sent events) printed a
//! line per event, resuming after the last event seen whenever the connection drops.

use std::time::Duration;

use http_body_util::BodyExt;

use crate::client::{ClientError, EcsClient};

/// Which events to print.
#[derive(Clone, Debug, Default)]
pub struct Tail {
    /// Only those of this cluster.
    pub cluster: Option<String>,
    /// Only those of this kind (`detail-type`, e.g. `ECS Task State Change`).
    pub detail_type: Option<String>,
    /// Those after this sequence number; `None`: those from now on.
    pub after: Option<i64>,
}

/// Prints the events `tail` asks for until the server refuses the stream, resuming after the
/// last one printed when the connection drops.
pub async fn run(client: &EcsClient, tail: &Tail) -> Result<(), ClientError> {
    let mut query = Vec::new();
    if let Some(cluster) = &tail.cluster {
        query.push(format!(
            "cluster={}",
            crate::acs::query_value(cluster).replace('+', "%20")
        ));
    }
    if let Some(kind) = &tail.detail_type {
        query.push(format!(
            "detail-type={}",
            crate::acs::query_value(kind).replace('+', "%20")
        ));
    }
    let path = |from_now: bool| {
        let mut query = query.clone();
        if from_now {
            query.push("from=now".into());
        }
        match query.is_empty() {
            true => "/events/stream".to_owned(),
            false => format!("/events/stream?{}", query.join("&")),
        }
    };
    let mut after = tail.after;
    loop {
        let last = after.map(|seq| seq.to_string());
        let headers: Vec<(&str, &str)> = last.iter().map(|l| ("last-event-id", l.as_str())).collect();
        match client.get(&path(after.is_none()), &headers).await {
            Ok(response) if response.status().is_success() => {
                let mut body = response.into_body();
                let mut buffer = String::new();
                while let Some(Ok(frame)) = body.frame().await {
                    let Ok(data) = frame.into_data() else { continue };
                    buffer.push_str(&String::from_utf8_lossy(&data));
                    while let Some(end) = buffer.find("\n\n") {
                        let block: String = buffer.drain(..end + 2).collect();
                        if let Some((seq, line)) = summarize(&block) {
                            after = Some(seq);
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
