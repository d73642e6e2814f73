//! The ECS API model ecsd implements, embedded from `model/ecs.json` (generated from the
//! reference model by `tools/gen-model.py`), and the models of the agent channels (ACS and TCS,
//! `model/acs.json` and `model/tcs.json`), whose shapes are the channels' messages.
//!
//! Every request body is checked against its input shape before a handler sees it, so handlers
//! work on well-typed JSON: wrong JSON types are `SerializationException`, missing required
//! members, values outside an enum and violated length or range limits are
//! `InvalidParameterException`, members the model does not define are dropped (AWS JSON services
//! ignore them) and `null` means absent. In debug builds every response is checked against its
//! output shape too, so a member name that drifts from the model fails the tests.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::ApiError;

const MODEL_JSON: &str = include_str!("../model/ecs.json");
const ACS_JSON: &str = include_str!("../model/acs.json");
const TCS_JSON: &str = include_str!("../model/tcs.json");

#[derive(Debug, Deserialize)]
struct RawModel {
    operations: HashMap<String, RawOperation>,
    shapes: HashMap<String, RawShape>,
}

#[derive(Debug, Deserialize)]
struct RawOperation {
    input: Option<String>,
    output: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ShapeRef {
    shape: String,
}

#[derive(Debug, Deserialize)]
struct RawShape {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    members: BTreeMap<String, ShapeRef>,
    member: Option<ShapeRef>,
    key: Option<ShapeRef>,
    value: Option<ShapeRef>,
    #[serde(default)]
    required: Vec<String>,
    #[serde(rename = "enum")]
    enum_values: Option<Vec<String>>,
    min: Option<f64>,
    max: Option<f64>,
    #[serde(default)]
    union: bool,
}

/// The model, resolved into an arena so that checking a request costs no name lookups.
#[derive(Debug)]
pub struct Model {
    shapes: Vec<Shape>,
    names: HashMap<String, usize>,
    operations: HashMap<String, (Option<usize>, Option<usize>)>,
}

#[derive(Debug)]
struct Shape {
    kind: Kind,
    min: Option<f64>,
    max: Option<f64>,
}

#[derive(Debug)]
enum Kind {
    Structure {
        members: Vec<(String, usize)>,
        required: Vec<String>,
        union: bool,
    },
    List(usize),
    Map(usize, usize),
    String(Option<Vec<String>>),
    Integer,
    Long,
    Double,
    Boolean,
    Timestamp,
    Document,
}

/// Which way a value travels: requests are forgiving (unknown members dropped), responses are
/// strict (a member the model lacks is a bug of ours).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Input,
    Output,
}

impl Model {
    /// The embedded model, parsed once.
    pub fn get() -> &'static Model {
        static MODEL: OnceLock<Model> = OnceLock::new();
        MODEL.get_or_init(|| Model::parse(MODEL_JSON).expect("the embedded model is valid"))
    }

    /// The ACS model: the messages of the channel that hands tasks to agents.
    pub fn acs() -> &'static Model {
        static MODEL: OnceLock<Model> = OnceLock::new();
        MODEL.get_or_init(|| Model::parse(ACS_JSON).expect("the embedded ACS model is valid"))
    }

    /// The TCS model: the messages of the telemetry channel.
    pub fn tcs() -> &'static Model {
        static MODEL: OnceLock<Model> = OnceLock::new();
        MODEL.get_or_init(|| Model::parse(TCS_JSON).expect("the embedded TCS model is valid"))
    }

    fn parse(text: &str) -> Result<Model, String> {
        let raw: RawModel = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut names: Vec<&str> = raw.shapes.keys().map(String::as_str).collect();
        names.sort_unstable();
        for (i, name) in names.iter().enumerate() {
            index.insert(name, i);
        }
        let lookup = |r: &ShapeRef| {
            index
                .get(r.shape.as_str())
                .copied()
                .ok_or_else(|| format!("unknown shape {}", r.shape))
        };
        let mut shapes = Vec::with_capacity(names.len());
        for name in &names {
            let s = &raw.shapes[*name];
            let child = |r: &Option<ShapeRef>| {
                r.as_ref()
                    .ok_or_else(|| format!("{name} lacks a target"))
                    .and_then(lookup)
            };
            let kind = match s.kind.as_str() {
                "structure" => Kind::Structure {
                    members: s
                        .members
                        .iter()
                        .map(|(m, r)| lookup(r).map(|i| (m.clone(), i)))
                        .collect::<Result<_, _>>()?,
                    required: s.required.clone(),
                    union: s.union,
                },
                "list" => Kind::List(child(&s.member)?),
                "map" => Kind::Map(child(&s.key)?, child(&s.value)?),
                "string" => Kind::String(s.enum_values.clone()),
                "integer" => Kind::Integer,
                "long" => Kind::Long,
                "double" | "float" => Kind::Double,
                "boolean" => Kind::Boolean,
                "timestamp" => Kind::Timestamp,
                "document" => Kind::Document,
                other => return Err(format!("{name}: unsupported shape type {other}")),
            };
            shapes.push(Shape {
                kind,
                min: s.min,
                max: s.max,
            });
        }
        let operations = raw
            .operations
            .iter()
            .map(|(name, op)| {
                let find = |s: &Option<String>| s.as_deref().and_then(|s| index.get(s).copied());
                (name.clone(), (find(&op.input), find(&op.output)))
            })
            .collect();
        let names = index.into_iter().map(|(name, i)| (name.to_owned(), i)).collect();
        Ok(Model {
            shapes,
            names,
            operations,
        })
    }

    /// Checks a message received as the named shape, as requests are checked, and returns it
    /// normalised (unknown members and nulls removed).
    pub fn check_received(&self, shape: &str, mut value: Value) -> Result<Value, ApiError> {
        let id = self.shape_id(shape)?;
        self.check(id, &mut value, &mut Path::default(), Direction::Input)?;
        Ok(value)
    }

    /// Checks a message to send against the named shape, strictly: every member must be in the
    /// model, with its type.
    pub fn check_sent(&self, shape: &str, value: &Value) -> Result<(), ApiError> {
        let id = self.shape_id(shape)?;
        self.check(id, &mut value.clone(), &mut Path::default(), Direction::Output)
    }

    fn shape_id(&self, shape: &str) -> Result<usize, ApiError> {
        self.names
            .get(shape)
            .copied()
            .ok_or_else(|| ApiError::serialization(format!("'{shape}' is not a message of this channel.")))
    }

    /// The names of the operations the model holds.
    pub fn operation_names(&self) -> impl Iterator<Item = &str> {
        self.operations.keys().map(String::as_str)
    }

    /// Whether the operation's input has a member of that name.
    pub fn input_has_member(&self, operation: &str, member: &str) -> bool {
        let input = self.operations.get(operation).and_then(|(input, _)| *input);
        matches!(input.map(|i| &self.shapes[i].kind), Some(Kind::Structure { members, .. }) if members.iter().any(|(m, _)| m == member))
    }

    /// Whether the structure `shape` has a member of that name.
    pub fn shape_has_member(&self, shape: &str, member: &str) -> bool {
        let id = self.names.get(shape).copied();
        matches!(id.map(|i| &self.shapes[i].kind), Some(Kind::Structure { members, .. }) if members.iter().any(|(m, _)| m == member))
    }

    /// Checks a request body against the operation's input shape and returns it normalised:
    /// unknown members and nulls removed.
    pub fn check_input(&self, operation: &str, body: &[u8]) -> Result<Value, ApiError> {
        let mut value: Value = if body.iter().all(u8::is_ascii_whitespace) {
            Value::Object(Map::new())
        } else {
            serde_json::from_slice(body)
                .map_err(|e| ApiError::serialization(format!("The request body is not valid JSON: {e}")))?
        };
        let (input, _) = self.operations.get(operation).copied().unwrap_or((None, None));
        match input {
            Some(shape) => self.check(shape, &mut value, &mut Path::default(), Direction::Input)?,
            None => value = Value::Object(Map::new()),
        }
        Ok(value)
    }

    /// Checks a response against the operation's output shape; used by debug builds and tests.
    pub fn check_output(&self, operation: &str, value: &Value) -> Result<(), ApiError> {
        let (_, output) = self.operations.get(operation).copied().unwrap_or((None, None));
        let Some(shape) = output else {
            return Ok(());
        };
        let mut copy = value.clone();
        self.check(shape, &mut copy, &mut Path::default(), Direction::Output)
    }

    fn check(&self, id: usize, value: &mut Value, path: &mut Path, dir: Direction) -> Result<(), ApiError> {
        let shape = &self.shapes[id];
        match (&shape.kind, value) {
            (
                Kind::Structure {
                    members,
                    required,
                    union,
                },
                Value::Object(map),
            ) => {
                let mut present = 0;
                let keys: Vec<String> = map.keys().cloned().collect();
                for key in keys {
                    let Some((_, member)) = members.iter().find(|(name, _)| *name == key) else {
                        if dir == Direction::Output {
                            return Err(ApiError::server(format!(
                                "response member '{}' is not in the model",
                                path.child(&key)
                            )));
                        }
                        map.remove(&key);
                        continue;
                    };
                    let child = map.get_mut(&key).expect("key listed above");
                    if child.is_null() {
                        map.remove(&key);
                        continue;
                    }
                    present += 1;
                    path.push_member(&key);
                    self.check(*member, child, path, dir)?;
                    path.pop();
                }
                if *union && present > 1 {
                    return Err(ApiError::invalid_parameter(format!(
                        "Only one member of '{}' may be set.",
                        path.display()
                    )));
                }
                if dir == Direction::Input {
                    if let Some(missing) = required.iter().find(|r| !map.contains_key(r.as_str())) {
                        return Err(ApiError::invalid_parameter(format!(
                            "Missing required parameter '{}'.",
                            path.child(missing)
                        )));
                    }
                }
                Ok(())
            }
            (Kind::List(member), Value::Array(items)) => {
                self.check_size(shape, items.len() as f64, path, "number of items")?;
                items.retain(|v| !v.is_null());
                for (i, item) in items.iter_mut().enumerate() {
                    path.push_index(i);
                    self.check(*member, item, path, dir)?;
                    path.pop();
                }
                Ok(())
            }
            (Kind::Map(key, val), Value::Object(map)) => {
                self.check_size(shape, map.len() as f64, path, "number of entries")?;
                map.retain(|_, v| !v.is_null());
                for (k, v) in map.iter_mut() {
                    path.push_member(k);
                    self.check(*key, &mut Value::String(k.clone()), path, dir)?;
                    self.check(*val, v, path, dir)?;
                    path.pop();
                }
                Ok(())
            }
            (Kind::String(allowed), Value::String(s)) => {
                // Nothing ECS stores holds control characters (and PostgreSQL cannot store a NUL);
                // tabs and line breaks occur in reasons and commands.
                if let Some(c) = s.chars().find(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')) {
                    if dir == Direction::Input {
                        return Err(ApiError::invalid_parameter(format!(
                            "Invalid value for '{}': it contains the control character U+{:04X}.",
                            path.display(),
                            c as u32
                        )));
                    }
                }
                if let Some(allowed) = allowed {
                    if !allowed.iter().any(|a| a == s) {
                        return Err(ApiError::invalid_parameter(format!(
                            "Invalid value '{s}' for '{}'; valid values are: {}.",
                            path.display(),
                            allowed.join(", ")
                        )));
                    }
                }
                self.check_size(shape, s.chars().count() as f64, path, "length")
            }
            (Kind::Integer, Value::Number(n)) if n.as_i64().is_some_and(|v| i32::try_from(v).is_ok()) => {
                self.check_size(shape, n.as_f64().unwrap_or_default(), path, "value")
            }
            (Kind::Long, Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(()),
            (Kind::Double | Kind::Timestamp, Value::Number(_)) => Ok(()),
            (Kind::Boolean, Value::Bool(_)) => Ok(()),
            (Kind::Document, _) => Ok(()),
            (kind, value) => Err(ApiError::serialization(format!(
                "Unexpected {} for '{}': expected {}.",
                json_type(value),
                path.display(),
                kind.describe()
            ))),
        }
    }

    fn check_size(&self, shape: &Shape, size: f64, path: &Path, what: &str) -> Result<(), ApiError> {
        if let Some(min) = shape.min.filter(|min| size < *min) {
            return Err(ApiError::invalid_parameter(format!(
                "The {what} of '{}' must be at least {min}.",
                path.display()
            )));
        }
        if let Some(max) = shape.max.filter(|max| size > *max) {
            return Err(ApiError::invalid_parameter(format!(
                "The {what} of '{}' must be at most {max}.",
                path.display()
            )));
        }
        Ok(())
    }
}

impl Kind {
    fn describe(&self) -> &'static str {
        match self {
            Kind::Structure { .. } | Kind::Map(..) => "an object",
            Kind::List(_) => "an array",
            Kind::String(_) => "a string",
            Kind::Integer => "a 32-bit integer",
            Kind::Long => "an integer",
            Kind::Double => "a number",
            Kind::Boolean => "a boolean",
            Kind::Timestamp => "a timestamp in epoch seconds",
            Kind::Document => "a JSON document",
        }
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "fractional number",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Where in the request a value sits, for messages such as `containers[0].exitCode`.
#[derive(Default)]
struct Path {
    parts: Vec<String>,
}

impl Path {
    fn push_member(&mut self, name: &str) {
        self.parts.push(name.to_owned());
    }

    fn push_index(&mut self, i: usize) {
        self.parts.push(format!("[{i}]"));
    }

    fn pop(&mut self) {
        self.parts.pop();
    }

    fn display(&self) -> String {
        let mut out = String::new();
        for part in &self.parts {
            if !out.is_empty() && !part.starts_with('[') {
                out.push('.');
            }
            out.push_str(part);
        }
        if out.is_empty() {
            out.push_str("the request");
        }
        out
    }

    fn child(&self, name: &str) -> String {
        if self.parts.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.display())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    fn input(op: &str, body: &str) -> Result<Value, ApiError> {
        Model::get().check_input(op, body.as_bytes())
    }

    #[test]
    fn accepts_a_well_formed_agent_report_and_drops_unknown_members() {
        let v = input(
            "SubmitTaskStateChange",
            r#"{"cluster":"default","task":"t","status":"RUNNING","zoneId":"x","reason":null,
               "containers":[{"containerName":"web","exitCode":0,"networkBindings":[]}],
               "pullStartedAt":1700000000.5}"#,
        )
        .unwrap();
        assert!(v.get("zoneId").is_none());
        assert!(v.get("reason").is_none());
        assert_eq!(v["containers"][0]["containerName"], "web");
    }

    #[test]
    fn wrong_json_types_are_serialization_errors_naming_the_member() {
        let err = input(
            "SubmitTaskStateChange",
            r#"{"task":"t","containers":[{"containerName":"web","exitCode":"zero"}]}"#,
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::SerializationException);
        assert!(err.message.contains("containers[0].exitCode"), "{}", err.message);

        let err = input("SubmitTaskStateChange", r#"{"pullStartedAt":"2024-01-01"}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::SerializationException);
        let err = input("SubmitTaskStateChange", r#"[1,2]"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::SerializationException);
        let err = input("RunTask", r#"{"taskDefinition":"x","count":1.5}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::SerializationException);
        let err = input("RunTask", r#"{"taskDefinition":"x","count":4294967296}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::SerializationException);
    }

    #[test]
    fn malformed_json_is_a_serialization_error() {
        let err = input("ListClusters", "{\"maxResults\": ").unwrap_err();
        assert_eq!(err.code, ErrorCode::SerializationException);
    }

    #[test]
    fn required_members_and_enums_are_invalid_parameters() {
        let err = input("DescribeTasks", "{}").unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidParameterException);
        assert!(err.message.contains("'tasks'"), "{}", err.message);

        let err = input("SubmitTaskStateChange", r#"{"attachments":[{"attachmentArn":"a"}]}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidParameterException);
        assert!(err.message.contains("attachments[0].status"), "{}", err.message);

        let err = input("RunTask", r#"{"taskDefinition":"x","launchType":"MOON"}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidParameterException);
        assert!(err.message.contains("launchType"), "{}", err.message);
    }

    #[test]
    fn control_characters_are_refused_naming_the_member() {
        let err = input("CreateCluster", r#"{"clusterName": "a\u0000b"}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidParameterException);
        assert!(
            err.message.contains("clusterName") && err.message.contains("U+0000"),
            "{}",
            err.message
        );
        let err = input(
            "TagResource",
            r#"{"resourceArn": "arn:x", "tags": [{"key": "k", "value": "\u001b[31m"}]}"#,
        )
        .unwrap_err();
        assert!(err.message.contains("tags[0].value"), "{}", err.message);
        input("StopTask", r#"{"task": "t", "reason": "line one\nline two\ttabbed"}"#).unwrap();
    }

    #[test]
    fn an_empty_body_is_an_empty_request() {
        assert_eq!(input("ListClusters", "").unwrap(), serde_json::json!({}));
    }

    #[test]
    fn outputs_with_members_outside_the_model_are_rejected() {
        let model = Model::get();
        let ok = serde_json::json!({"tasks": [{"taskArn": "a", "version": 3, "createdAt": 1.5}], "failures": []});
        model.check_output("DescribeTasks", &ok).unwrap();
        let bad = serde_json::json!({"tasks": [{"taskArn": "a", "lastState": "RUNNING"}]});
        let err = model.check_output("DescribeTasks", &bad).unwrap_err();
        assert!(err.message.contains("tasks[0].lastState"), "{}", err.message);
    }
}
