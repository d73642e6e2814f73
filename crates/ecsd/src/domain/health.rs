//! Health as ECS derives it from what agents publish over TCS: a task's `healthStatus` from
//! its essential containers', and a container instance's `healthStatus`
//! (`ContainerInstanceHealthStatus`) from the status of each of its checks.

use serde::Deserialize;
use serde_json::{json, Value};

use super::records::ContainerInstance;

/// The container health statuses of the model.
pub const HEALTH_STATUSES: [&str; 3] = ["HEALTHY", "UNHEALTHY", "UNKNOWN"];

/// A task's health from its essential containers': UNHEALTHY if any is, else UNKNOWN if any
/// is, else HEALTHY.
pub fn task_health<'a>(containers: impl Iterator<Item = &'a str>) -> String {
    let statuses: Vec<&str> = containers.collect();
    let status = if statuses.contains(&"UNHEALTHY") {
        "UNHEALTHY"
    } else if statuses.is_empty() || statuses.contains(&"UNKNOWN") {
        "UNKNOWN"
    } else {
        "HEALTHY"
    };
    status.into()
}

/// `InstanceStatus` of the TCS model.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub status: Option<String>,
    pub status_reason: Option<String>,
    pub last_updated: Option<f64>,
    pub last_status_change: Option<f64>,
}

pub const INSTANCE_HEALTH_STATES: [&str; 4] = ["OK", "IMPAIRED", "INSUFFICIENT_DATA", "INITIALIZING"];

/// The instance with `statuses` applied: one detail per check type, the overall status the
/// worst of them; its version moves only if its health changed.
pub fn with_health(record: &ContainerInstance, statuses: &[InstanceStatus]) -> ContainerInstance {
    let mut details: Vec<Value> = record
        .health_status
        .as_ref()
        .and_then(|h| h["details"].as_array())
        .cloned()
        .unwrap_or_default();
    for s in statuses {
        let (Some(kind), Some(status)) = (s.kind.as_deref(), s.status.as_deref()) else {
            continue;
        };
        if !INSTANCE_HEALTH_STATES.contains(&status) {
            continue;
        }
        let mut detail = json!({"type": kind, "status": status});
        if let Some(reason) = &s.status_reason {
            detail["statusReason"] = reason.as_str().into();
        }
        if let Some(at) = s.last_updated {
            detail["lastUpdated"] = at.into();
        }
        if let Some(at) = s.last_status_change {
            detail["lastStatusChange"] = at.into();
        }
        match details.iter_mut().find(|d| d["type"] == kind) {
            Some(existing) => *existing = detail,
            None => details.push(detail),
        }
    }
    // Worst first: IMPAIRED, INSUFFICIENT_DATA, INITIALIZING, then OK.
    let rank = |s: &str| match s {
        "IMPAIRED" => 0,
        "INSUFFICIENT_DATA" => 1,
        "INITIALIZING" => 2,
        _ => 3,
    };
    let overall = details
        .iter()
        .filter_map(|d| d["status"].as_str())
        .min_by_key(|s| rank(s))
        .unwrap_or("INITIALIZING")
        .to_owned();
    let mut next = record.clone();
    let health = json!({"overallStatus": overall, "details": details});
    if next.health_status.as_ref() != Some(&health) {
        next.health_status = Some(health);
        next.version += 1;
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_health_is_the_worst_of_its_essential_containers() {
        assert_eq!(task_health(["HEALTHY", "HEALTHY"].into_iter()), "HEALTHY");
        assert_eq!(task_health(["HEALTHY", "UNKNOWN"].into_iter()), "UNKNOWN");
        assert_eq!(task_health(["UNKNOWN", "UNHEALTHY"].into_iter()), "UNHEALTHY");
        assert_eq!(task_health(std::iter::empty()), "UNKNOWN");
    }

    #[test]
    fn instance_health_keeps_one_detail_per_check() {
        let record: ContainerInstance = serde_json::from_value(json!({
            "containerInstanceArn": "arn:aws:ecs:us-east-1:1:container-instance/c/i",
            "version": 1,
            "registeredResources": [],
            "status": "ACTIVE",
            "agentConnected": true,
            "attributes": [],
            "registeredAt": 1.0,
            "attachments": [],
            "tags": []
        }))
        .unwrap();
        let status = |kind: &str, status: &str| InstanceStatus {
            kind: Some(kind.into()),
            status: Some(status.into()),
            status_reason: None,
            last_updated: Some(5.0),
            last_status_change: Some(4.0),
        };
        let first = with_health(&record, &[status("CONTAINER_RUNTIME", "OK")]);
        assert_eq!(first.version, 2);
        let health = first.health_status.clone().unwrap();
        assert_eq!(health["overallStatus"], "OK");
        assert_eq!(health["details"][0]["lastUpdated"], 5.0);
        let second = with_health(
            &first,
            &[status("CONTAINER_RUNTIME", "IMPAIRED"), status("DAEMON", "OK")],
        );
        let health = second.health_status.unwrap();
        assert_eq!(health["overallStatus"], "IMPAIRED");
        assert_eq!(health["details"].as_array().unwrap().len(), 2);
        let same = with_health(&first, &[status("CONTAINER_RUNTIME", "OK")]);
        assert_eq!(same, first, "an unchanged status changes nothing");
    }
}
