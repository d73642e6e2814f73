//! State-change events in the EventBridge envelope ECS publishes: "ECS Task State Change" and
//! "ECS Container Instance State Change", with the resource as ECS shows it in `detail` and its
//! timestamps in ISO 8601.

use serde::Serialize;
use serde_json::{json, Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::records::Task;
use super::status::TaskStatus;
use super::Scope;

pub const TASK_STATE_CHANGE: &str = "ECS Task State Change";
pub const INSTANCE_STATE_CHANGE: &str = "ECS Container Instance State Change";

/// What a change means for the agent channels, kept beside its event so that every process can
/// wake the session of the agent that must hear of it without reading the event itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// The instance's agent has tasks to receive: a new task, or a task to stop.
    Tasks { instance_arn: String },
    /// The instance itself changed (it may have been deregistered).
    Instance { instance_arn: String },
}

impl Notice {
    /// The notice of a task change, if its agent must hear of it: a new task, or one to stop.
    /// The agent's own reports (most changes) need none.
    pub fn of_task(task: &Task) -> Option<Notice> {
        let instance_arn = task.container_instance_arn.clone()?;
        let to_stop = task.desired_status == TaskStatus::Stopped && task.last_status != TaskStatus::Stopped;
        (task.version == 1 || to_stop).then_some(Notice::Tasks { instance_arn })
    }

    pub fn instance_arn(&self) -> &str {
        match self {
            Notice::Tasks { instance_arn } | Notice::Instance { instance_arn } => instance_arn,
        }
    }

    /// As stored: `tasks ARN` or `instance ARN`.
    pub fn encode(&self) -> String {
        match self {
            Notice::Tasks { instance_arn } => format!("tasks {instance_arn}"),
            Notice::Instance { instance_arn } => format!("instance {instance_arn}"),
        }
    }

    pub fn decode(text: &str) -> Option<Notice> {
        let (kind, arn) = text.split_once(' ')?;
        let instance_arn = arn.to_owned();
        match kind {
            "tasks" => Some(Notice::Tasks { instance_arn }),
            "instance" => Some(Notice::Instance { instance_arn }),
            _ => None,
        }
    }
}

/// Members that hold epoch-second timestamps in the API and ISO 8601 text in events.
const TIMESTAMPS: [&str; 12] = [
    "connectivityAt",
    "createdAt",
    "executionStoppedAt",
    "lastStartedAt",
    "pullStartedAt",
    "pullStoppedAt",
    "registeredAt",
    "startedAt",
    "stoppedAt",
    "stoppingAt",
    "updatedAt",
    "deregisteredAt",
];

/// `t` (epoch seconds) as ISO 8601 with milliseconds, as EventBridge writes times.
pub fn iso8601(t: f64) -> String {
    let nanos = (t * 1000.0).round() as i128 * 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

fn isoify(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                match v {
                    Value::Number(n) if TIMESTAMPS.contains(&key.as_str()) => {
                        *v = Value::String(iso8601(n.as_f64().unwrap_or_default()));
                    }
                    _ => isoify(v),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(isoify),
        _ => {}
    }
}

/// The envelope of an event about `resource_arn` with `detail` (API-shaped; its timestamps are
/// rewritten as ISO 8601, and `updatedAt` is set to the event's time), as JSON text.
pub fn envelope(
    scope: &Scope,
    detail_type: &str,
    resource_arn: &str,
    mut detail: Map<String, Value>,
    time: f64,
) -> String {
    detail.insert("updatedAt".into(), json!(time));
    let mut detail = Value::Object(detail);
    isoify(&mut detail);
    // Written straight to text, its members in the order a JSON object of them would have.
    #[derive(Serialize)]
    struct Envelope<'a> {
        account: &'a str,
        detail: &'a Value,
        #[serde(rename = "detail-type")]
        detail_type: &'a str,
        id: String,
        region: &'a str,
        resources: [&'a str; 1],
        source: &'static str,
        time: String,
        version: &'static str,
    }
    let envelope = Envelope {
        account: &scope.account,
        detail: &detail,
        detail_type,
        id: uuid::Uuid::new_v4().to_string(),
        region: &scope.region,
        resources: [resource_arn],
        source: "aws.ecs",
        // EventBridge's `time` has whole seconds.
        time: iso8601(time.floor()),
        version: "0",
    };
    serde_json::to_string(&envelope).unwrap_or_default()
}

/// The "ECS Task State Change" event for `task` as it now is, as JSON text.
pub fn task_event(scope: &Scope, task: &Task, time: f64) -> String {
    let mut detail = match serde_json::to_value(task) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    // Tags are not part of the state; EventBridge carries them elsewhere.
    detail.remove("tags");
    envelope(scope, TASK_STATE_CHANGE, &task.task_arn, detail, time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_become_iso_8601() {
        assert_eq!(iso8601(1_700_000_000.25), "2023-11-14T22:13:20.25Z");
        assert_eq!(iso8601(0.0), "1970-01-01T00:00:00Z");
        let scope = Scope::new("123456789012", "us-east-1");
        let detail =
            json!({"createdAt": 1_700_000_000.5, "containers": [{"name": "a", "lastStartedAt": 1.0}], "version": 3});
        let text = envelope(
            &scope,
            TASK_STATE_CHANGE,
            "arn:t",
            detail.as_object().cloned().unwrap(),
            1_700_000_001.0,
        );
        let event: Value = serde_json::from_str(&text).unwrap();
        let keys: Vec<&String> = event.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "account",
                "detail",
                "detail-type",
                "id",
                "region",
                "resources",
                "source",
                "time",
                "version"
            ]
        );
        assert_eq!(event["detail"]["createdAt"], "2023-11-14T22:13:20.5Z");
        assert_eq!(
            event["detail"]["containers"][0]["lastStartedAt"],
            "1970-01-01T00:00:01Z"
        );
        assert_eq!(event["detail"]["version"], 3);
        assert_eq!(event["detail"]["updatedAt"], "2023-11-14T22:13:21Z");
        assert_eq!(event["time"], "2023-11-14T22:13:21Z");
        assert_eq!(event["source"], "aws.ecs");
        assert_eq!(event["detail-type"], "ECS Task State Change");
        assert_eq!(event["resources"][0], "arn:t");
        assert_eq!(event["version"], "0");
    }

    #[test]
    fn only_changes_an_agent_must_hear_of_carry_a_notice() {
        let task = |version: i64, desired: &str, last: &str, instance: Option<&str>| -> Task {
            serde_json::from_value(json!({
                "taskArn": "arn:t", "clusterArn": "arn:c", "taskDefinitionArn": "arn:d",
                "containerInstanceArn": instance, "overrides": {}, "lastStatus": last,
                "desiredStatus": desired, "containers": [], "version": version, "createdAt": 1.0,
                "attachments": [], "tags": [], "enableExecuteCommand": false
            }))
            .unwrap()
        };
        let new_work = Notice::Tasks {
            instance_arn: "arn:i".into(),
        };
        let tasks = Some(new_work.clone());
        assert_eq!(
            Notice::of_task(&task(1, "RUNNING", "PENDING", Some("arn:i"))),
            tasks,
            "a new task"
        );
        assert_eq!(
            Notice::of_task(&task(4, "STOPPED", "RUNNING", Some("arn:i"))),
            tasks,
            "a task to stop"
        );
        assert_eq!(
            Notice::of_task(&task(3, "RUNNING", "RUNNING", Some("arn:i"))),
            None,
            "the agent's own report"
        );
        assert_eq!(
            Notice::of_task(&task(5, "STOPPED", "STOPPED", Some("arn:i"))),
            None,
            "its report that it stopped"
        );
        assert_eq!(
            Notice::of_task(&task(1, "RUNNING", "PENDING", None)),
            None,
            "no instance, no agent"
        );
        for notice in [
            new_work,
            Notice::Instance {
                instance_arn: "arn:x y".into(),
            },
        ] {
            assert_eq!(Notice::decode(&notice.encode()), Some(notice));
        }
        assert_eq!(Notice::decode("garbage"), None);
    }
}
