//! State-change events in the EventBridge envelope ECS publishes: "ECS Task State Change" and
//! "ECS Container Instance State Change", with the resource as ECS shows it in `detail` and its
//! timestamps in ISO 8601.

use std::cell::Cell;
use std::io::{self, Write};

use serde::Serialize;
use serde_json::ser::{CharEscape, CompactFormatter, Formatter};
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

/// Top-level members of a resource an event's `detail` leaves out: tags are not part of the
/// state (EventBridge carries them elsewhere), and `updatedAt` is the event's own.
const LEFT_OUT: [&str; 2] = ["tags", "updatedAt"];

/// Writes a resource as an event's `detail`, straight to the event's text with no JSON tree
/// between (this runs for every change, on the store's writer): the API's epoch-second
/// timestamps (members named in [`TIMESTAMPS`], at any depth) as ISO 8601 text, without the
/// members [`LEFT_OUT`], and with `updatedAt`, the event's time, last.
struct DetailFormatter<'a> {
    /// Set while a left-out member is written: its text goes nowhere.
    muted: &'a Cell<bool>,
    /// Objects open around what is being written.
    depth: usize,
    /// Whether a member's name is being written, and the name so far (as written, escaped); at
    /// the top level it is held back until it is known whether the member is left out.
    naming: bool,
    name: Vec<u8>,
    /// Whether the value about to be written is a timestamp member's.
    timestamp: bool,
    /// Whether the top-level object has members written yet.
    top_members: bool,
    updated_at: &'a str,
}

impl DetailFormatter<'_> {
    /// Whether the value now written is a timestamp member's (and is written as ISO 8601).
    fn take_timestamp(&mut self) -> bool {
        std::mem::take(&mut self.timestamp)
    }

    fn write_time<W: ?Sized + io::Write>(writer: &mut W, t: f64) -> io::Result<()> {
        write!(writer, "\"{}\"", iso8601(t))
    }

    /// Whether a top-level member's name is being held back.
    fn holding_key(&self) -> bool {
        self.naming && self.depth == 1
    }
}

impl Formatter for DetailFormatter<'_> {
    fn write_null<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.timestamp = false;
        writer.write_all(b"null")
    }

    fn write_bool<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: bool) -> io::Result<()> {
        self.timestamp = false;
        CompactFormatter.write_bool(writer, value)
    }

    fn write_i64<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: i64) -> io::Result<()> {
        if self.take_timestamp() {
            return Self::write_time(writer, value as f64);
        }
        CompactFormatter.write_i64(writer, value)
    }

    fn write_u64<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: u64) -> io::Result<()> {
        if self.take_timestamp() {
            return Self::write_time(writer, value as f64);
        }
        CompactFormatter.write_u64(writer, value)
    }

    fn write_f64<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f64) -> io::Result<()> {
        if self.take_timestamp() {
            return Self::write_time(writer, value);
        }
        CompactFormatter.write_f64(writer, value)
    }

    fn begin_string<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        if !self.naming {
            self.timestamp = false;
        }
        if self.holding_key() {
            return Ok(());
        }
        writer.write_all(b"\"")
    }

    fn end_string<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        if self.holding_key() {
            return Ok(());
        }
        writer.write_all(b"\"")
    }

    fn write_string_fragment<W: ?Sized + io::Write>(&mut self, writer: &mut W, fragment: &str) -> io::Result<()> {
        if self.naming {
            self.name.extend_from_slice(fragment.as_bytes());
        }
        if self.holding_key() {
            return Ok(());
        }
        writer.write_all(fragment.as_bytes())
    }

    fn write_char_escape<W: ?Sized + io::Write>(&mut self, writer: &mut W, escape: CharEscape) -> io::Result<()> {
        if !self.naming {
            return CompactFormatter.write_char_escape(writer, escape);
        }
        // The name is kept as written, escaped: no name looked for has a character to escape.
        let start = self.name.len();
        CompactFormatter.write_char_escape(&mut self.name, escape)?;
        if self.holding_key() {
            return Ok(());
        }
        writer.write_all(&self.name[start..])
    }

    fn begin_array<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.timestamp = false;
        writer.write_all(b"[")
    }

    fn begin_object<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.timestamp = false;
        self.depth += 1;
        writer.write_all(b"{")
    }

    fn end_object<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.depth -= 1;
        if self.depth == 0 {
            let comma = if self.top_members { "," } else { "" };
            write!(writer, "{comma}\"updatedAt\":\"{}\"", self.updated_at)?;
        }
        writer.write_all(b"}")
    }

    fn begin_object_key<W: ?Sized + io::Write>(&mut self, writer: &mut W, first: bool) -> io::Result<()> {
        self.naming = true;
        self.name.clear();
        if self.depth == 1 {
            // Its comma too waits for its name.
            return Ok(());
        }
        CompactFormatter.begin_object_key(writer, first)
    }

    fn end_object_key<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.naming = false;
        let name = std::str::from_utf8(&self.name).unwrap_or_default();
        self.timestamp = TIMESTAMPS.contains(&name);
        if self.depth == 1 {
            if LEFT_OUT.contains(&name) {
                self.muted.set(true);
                return Ok(());
            }
            if std::mem::replace(&mut self.top_members, true) {
                writer.write_all(b",")?;
            }
            writer.write_all(b"\"")?;
            writer.write_all(&self.name)?;
            writer.write_all(b"\"")?;
        }
        Ok(())
    }

    fn end_object_value<W: ?Sized + io::Write>(&mut self, _writer: &mut W) -> io::Result<()> {
        if self.depth == 1 {
            self.muted.set(false);
        }
        Ok(())
    }
}

/// Where a [`DetailFormatter`] writes: the event's text, but nothing while it is muted.
struct Muted<'a> {
    out: &'a mut Vec<u8>,
    muted: &'a Cell<bool>,
}

impl io::Write for Muted<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.muted.get() {
            self.out.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The envelope of an event about `resource_arn` with `detail` (the resource in the API's shape,
/// written as [`DetailFormatter`] writes it), as JSON text.
pub fn envelope(scope: &Scope, detail_type: &str, resource_arn: &str, detail: &impl Serialize, time: f64) -> String {
    let mut out = Vec::with_capacity(2048);
    // Its members in the order a JSON object of them would have: that of their names.
    let text = |out: &mut Vec<u8>, value: &str| serde_json::to_writer(out, value);
    let written = (|| -> serde_json::Result<()> {
        out.extend_from_slice(b"{\"account\":");
        text(&mut out, &scope.account)?;
        out.extend_from_slice(b",\"detail\":");
        let updated_at = iso8601(time);
        let muted = Cell::new(false);
        let formatter = DetailFormatter {
            muted: &muted,
            depth: 0,
            naming: false,
            name: Vec::with_capacity(32),
            timestamp: false,
            top_members: false,
            updated_at: &updated_at,
        };
        let writer = Muted {
            out: &mut out,
            muted: &muted,
        };
        detail.serialize(&mut serde_json::Serializer::with_formatter(writer, formatter))?;
        out.extend_from_slice(b",\"detail-type\":");
        text(&mut out, detail_type)?;
        out.extend_from_slice(b",\"id\":\"");
        out.extend_from_slice(
            uuid::Uuid::new_v4()
                .hyphenated()
                .encode_lower(&mut uuid::Uuid::encode_buffer())
                .as_bytes(),
        );
        out.extend_from_slice(b"\",\"region\":");
        text(&mut out, &scope.region)?;
        out.extend_from_slice(b",\"resources\":[");
        text(&mut out, resource_arn)?;
        // EventBridge's `time` has whole seconds.
        write!(
            out,
            "],\"source\":\"aws.ecs\",\"time\":\"{}\",\"version\":\"0\"}}",
            iso8601(time.floor())
        )
        .map_err(serde_json::Error::io)
    })();
    match written {
        // Only valid UTF-8 was written: JSON text of strings that were.
        Ok(()) => String::from_utf8(out).unwrap_or_default(),
        Err(e) => {
            tracing::error!(error = %e, "an event could not be written");
            String::new()
        }
    }
}

/// The "ECS Task State Change" event for `task` as it now is, as JSON text.
pub fn task_event(scope: &Scope, task: &Task, time: f64) -> String {
    envelope(scope, TASK_STATE_CHANGE, &task.task_arn, task, time)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn timestamps_become_iso_8601() {
        assert_eq!(iso8601(1_700_000_000.25), "2023-11-14T22:13:20.25Z");
        assert_eq!(iso8601(0.0), "1970-01-01T00:00:00Z");
        let scope = Scope::new("123456789012", "us-east-1");
        let detail =
            json!({"createdAt": 1_700_000_000.5, "containers": [{"name": "a", "lastStartedAt": 1.0}], "version": 3});
        let text = envelope(&scope, TASK_STATE_CHANGE, "arn:t", &detail, 1_700_000_001.0);
        let event: Value = serde_json::from_str(&text).unwrap();
        // The envelope's members in the order of their names, as EventBridge writes them.
        assert!(text.starts_with(r#"{"account":"123456789012","detail":{"#), "{text}");
        assert!(
            text.contains(r#"},"detail-type":"ECS Task State Change","id":""#),
            "{text}"
        );
        assert!(
            text.ends_with(r#"","region":"us-east-1","resources":["arn:t"],"source":"aws.ecs","time":"2023-11-14T22:13:21Z","version":"0"}"#),
            "{text}"
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

    /// What the detail was before it was written straight from the resource: the resource as
    /// a JSON tree, its timestamps rewritten, its tags and `updatedAt` replaced.
    fn detail_from_tree(resource: &impl Serialize, time: f64) -> Value {
        fn isoify(value: &mut Value) {
            match value {
                Value::Object(map) => {
                    for (key, v) in map.iter_mut() {
                        match v {
                            Value::Number(n) if TIMESTAMPS.contains(&key.as_str()) => {
                                *v = Value::String(iso8601(n.as_f64().unwrap()));
                            }
                            _ => isoify(v),
                        }
                    }
                }
                Value::Array(items) => items.iter_mut().for_each(isoify),
                _ => {}
            }
        }
        let mut detail = serde_json::to_value(resource).unwrap();
        let map = detail.as_object_mut().unwrap();
        map.remove("tags");
        map.insert("updatedAt".into(), json!(time));
        isoify(&mut detail);
        detail
    }

    fn detail_of(resource: &impl Serialize, time: f64) -> (String, Value) {
        let scope = Scope::new("123456789012", "us-east-1");
        let text = envelope(&scope, TASK_STATE_CHANGE, "arn:t", resource, time);
        let event: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        (text, event["detail"].clone())
    }

    #[test]
    fn a_detail_is_what_the_resource_shows_with_iso_times_and_without_its_tags() {
        let time = 1_700_000_001.5;
        let task: Task = serde_json::from_value(json!({
            "taskArn": "arn:t", "clusterArn": "arn:c", "taskDefinitionArn": "arn:d",
            "overrides": {"containerOverrides": [{"name": "app", "tags": ["kept"], "createdAt": 7}]},
            "lastStatus": "RUNNING", "desiredStatus": "RUNNING", "version": 3,
            "createdAt": 1_700_000_000.25, "startedAt": 1_700_000_000.75, "connectivityAt": 1_700_000_000,
            "containers": [{"containerArn": "arn:k", "taskArn": "arn:t", "name": "app", "lastStatus": "RUNNING",
                            "networkBindings": [], "networkInterfaces": [],
                            "managedAgents": [{"name": "ExecuteCommandAgent", "lastStartedAt": 12.5}]}],
            "attachments": [], "platformVersion": "1.4.0", "weird\"name": {"stoppedAt": "not a number"},
            "updatedAt": 5, "tags": [{"key": "team", "value": "a"}], "enableExecuteCommand": true
        }))
        .unwrap();
        let (text, detail) = detail_of(&task, time);
        assert_eq!(detail, detail_from_tree(&task, time), "{text}");
        assert_eq!(detail["createdAt"], "2023-11-14T22:13:20.25Z");
        assert_eq!(detail["connectivityAt"], "2023-11-14T22:13:20Z");
        assert_eq!(
            detail["containers"][0]["managedAgents"][0]["lastStartedAt"],
            "1970-01-01T00:00:12.5Z"
        );
        assert_eq!(
            detail["overrides"]["containerOverrides"][0]["createdAt"],
            "1970-01-01T00:00:07Z"
        );
        assert_eq!(detail["overrides"]["containerOverrides"][0]["tags"], json!(["kept"]));
        assert_eq!(detail["weird\"name"]["stoppedAt"], "not a number");
        assert_eq!(detail["version"], 3);
        assert_eq!(detail["updatedAt"], "2023-11-14T22:13:21.5Z");
        assert!(detail.get("tags").is_none(), "{text}");
        assert_eq!(text.matches("updatedAt").count(), 1, "{text}");

        // Left-out members first and last, and an object with nothing else.
        let first_and_last = json!({"tags": [{"key": "k"}], "name": "x", "stoppedAt": 2, "updatedAt": 1});
        assert_eq!(
            detail_of(&first_and_last, time).1,
            detail_from_tree(&first_and_last, time)
        );
        let only_left_out = json!({"tags": []});
        assert_eq!(
            detail_of(&only_left_out, time).1,
            json!({"updatedAt": "2023-11-14T22:13:21.5Z"})
        );
        assert_eq!(
            detail_of(&json!({}), time).1,
            json!({"updatedAt": "2023-11-14T22:13:21.5Z"})
        );
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
