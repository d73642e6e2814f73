#!/usr/bin/env python3
"""Extract the part of the ECS API model that ecsd implements, and its Rust shapes.

Reads the full botocore-style model, keeps the named operations and every shape they reach
(inputs, outputs, errors), drops documentation, and writes compact, sorted JSON. The output is
committed as crates/ecsd/model/ecs.json; `--check` fails when it differs from a fresh run, so the
embedded model can never drift from the reference. The agent channels' models are extracted the
same way (`--model ../shared/reference/acs-api-2.json --out crates/ecsd/model/acs.json`, and
likewise for TCS).

For the ECS model it also writes the Rust types of those shapes, crates/ecsd/src/shapes.rs:
a struct per structure, an enum per string enum, the error codes (the model's exception shapes
and the protocol errors every AWS JSON service shares) and, per operation, its input and output
types. `--check` covers that file too.

Usage:
  tools/gen-model.py [--check] [--model PATH] [--out PATH] [OPERATION ...]
With no OPERATION, the operations already listed in the output file are kept.
"""
import argparse
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT.parent / "shared" / "reference" / "ecs-2014-11-13.service.json"
DEFAULT_OUT = ROOT / "crates" / "ecsd" / "model" / "ecs.json"
KEEP_SHAPE_KEYS = {"type", "members", "member", "key", "value", "required", "enum",
                   "min", "max", "box", "exception", "fault", "union", "document"}


def extract(model, operations):
    shapes = model["shapes"]
    keep, todo = {}, []
    ops = {}
    for name in sorted(operations):
        op = model["operations"].get(name)
        if op is None:
            sys.exit(f"unknown operation {name}")
        entry = {}
        for part in ("input", "output"):
            if part in op:
                entry[part] = op[part]["shape"]
                todo.append(op[part]["shape"])
        entry["errors"] = sorted(e["shape"] for e in op.get("errors", []))
        todo.extend(entry["errors"])
        ops[name] = entry
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        shape = {k: v for k, v in shapes[name].items() if k in KEEP_SHAPE_KEYS}
        if "members" in shape:
            shape["members"] = {m: {"shape": s["shape"]} for m, s in shape["members"].items()}
            todo.extend(m["shape"] for m in shape["members"].values())
        for k in ("member", "key", "value"):
            if k in shape:
                shape[k] = {"shape": shape[k]["shape"]}
                todo.append(shape[k]["shape"])
        keep[name] = shape
    meta = {k: model["metadata"][k] for k in ("apiVersion", "targetPrefix", "signingName", "jsonVersion")
            if k in model["metadata"]}
    return {"metadata": meta, "operations": ops, "shapes": dict(sorted(keep.items()))}


RUST_OUT = ROOT / "crates" / "ecsd" / "src" / "shapes.rs"

# Shapes ecsd renders from its own records (domain::records) rather than builds member by
# member; their Rust type holds the rendered JSON, which debug builds check against the model.
RENDERED = {"Cluster", "ContainerInstance", "Service", "ServiceDeployment", "ServiceRevision", "Task", "TaskDefinition", "TaskSet"}

# Errors of the protocol rather than of an operation, with their HTTP status.
PROTOCOL_ERRORS = {
    "IncompleteSignatureException": 400,
    "InvalidSignatureException": 400,
    "MissingAuthenticationTokenException": 403,
    "RequestEntityTooLargeException": 413,
    "RequestHeaderFieldsTooLargeException": 431,
    "RequestTimeoutException": 408,
    "SerializationException": 400,
    "ServiceUnavailableException": 503,
    "ThrottlingException": 400,
    "UnknownOperationException": 400,
    "UnrecognizedClientException": 400,
}

KEYWORDS = {"type", "ref", "self", "mod", "use", "match", "loop", "move", "static", "where", "as",
            "in", "fn", "let", "impl", "struct", "enum", "crate", "super", "async", "await",
            "box", "dyn", "override", "final", "macro", "priv", "typeof", "yield", "try"}
PRIMITIVES = {"integer": "i32", "long": "i64", "boolean": "bool", "double": "f64",
              "float": "f32", "timestamp": "f64"}


def snake(name):
    out = ""
    for i, c in enumerate(name):
        if c.isupper() and i and (name[i - 1].islower() or name[i - 1].isdigit()
                                  or (i + 1 < len(name) and name[i + 1].islower())):
            out += "_"
        out += c.lower()
    return "r#" + out if out in KEYWORDS else out


def variant(value):
    parts = [p for p in value.replace("-", "_").split("_") if p]
    if len(parts) == 1 and not value.isupper() and not value.islower():
        return value[0].upper() + value[1:]
    return "".join(p[0].upper() + p[1:].lower() for p in parts)


def reach(shapes, roots, rendered=frozenset()):
    seen, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        shape = shapes[name]
        if name in rendered:
            continue
        todo.extend(m["shape"] for m in shape.get("members", {}).values())
        todo.extend(shape[k]["shape"] for k in ("member", "key", "value") if k in shape)
    return seen


def emit(shapes, names, inputs, outputs, rendered, exceptions_too=False, rendered_type="Rendered"):
    """Rust types for `names`: structs (Deserialize too when received), enums, rendered shapes
    (holding `rendered_type`)."""

    def rtype(name):
        shape = shapes[name]
        kind = shape["type"]
        if kind in PRIMITIVES:
            return PRIMITIVES[kind]
        if kind == "string":
            return name if "enum" in shape else "String"
        if kind == "list":
            return f"Vec<{rtype(shape['member']['shape'])}>"
        if kind == "map":
            return f"BTreeMap<{rtype(shape['key']['shape'])}, {rtype(shape['value']['shape'])}>"
        return name

    def defaultable(name):
        shape = shapes[name]
        return not any(m in shape.get("required", []) and "enum" in shapes[t["shape"]]
                       for m, t in shape.get("members", {}).items())

    out = []
    for name in sorted(names):
        shape = shapes[name]
        kind = shape["type"]
        received = name in inputs
        if name in rendered:
            out += [
                f"/// `{name}`, as ecsd renders it from its record.",
                "#[derive(Clone, Debug, PartialEq, Serialize)]",
                "#[serde(transparent)]",
                f"pub struct {name}(pub {rendered_type});",
                "",
            ]
        elif kind == "structure" and (exceptions_too or not shape.get("exception")):
            derives = ["Clone", "Debug", "PartialEq", "Serialize"]
            if received:
                derives.append("Deserialize")
            if defaultable(name):
                derives.append("Default")
            out.append(f"#[derive({', '.join(derives)})]")
            out.append(f"pub struct {name} {{")
            required = set(shape.get("required", [])) if received else set()
            for member, ref in shape.get("members", {}).items():
                ty = rtype(ref["shape"])
                optional = (", default" if received else "") + ', skip_serializing_if = "Option::is_none"'
                out.append(f'    #[serde(rename = "{member}"' + ("" if member in required else optional) + ")]")
                out.append(f"    pub {snake(member)}: {ty if member in required else f'Option<{ty}>'},")
            out += ["}", ""]
        elif kind == "string" and "enum" in shape:
            variants = [(variant(v), v) for v in shape["enum"]]
            if len({v for v, _ in variants}) != len(variants):
                sys.exit(f"enum {name}: two values give one variant name")
            out.append("#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]")
            out.append(f"pub enum {name} {{")
            for v, value in variants:
                out.append(f'    #[serde(rename = "{value}")]')
                out.append(f"    {v},")
            out += ["}", "", f"impl {name} {{", "    pub const fn as_str(self) -> &'static str {",
                    "        match self {"]
            out += [f'            {name}::{v} => "{value}",' for v, value in variants]
            out += ["        }", "    }", "}", ""]
    return out


def rustfmt(lines):
    # Formatted as `cargo fmt` would, so that the format check passes over generated code too.
    formatted = subprocess.run(["rustfmt", "--edition", "2021", "--config-path", str(ROOT)],
                               input="\n".join(lines), capture_output=True, text=True, check=True)
    return formatted.stdout


def rust_shapes(extract):
    shapes, ops = extract["shapes"], extract["operations"]
    inputs = reach(shapes, [op["input"] for op in ops.values() if "input" in op], RENDERED)
    outputs = reach(shapes, [op["output"] for op in ops.values() if "output" in op], RENDERED)
    out = [
        "// @generated by tools/gen-model.py — do not edit",
        "//! The shapes of the operations ecsd implements, from the ECS model: a struct per",
        "//! structure (members under the model's names; required members of shapes a client sends",
        "//! are plain values, every other member an `Option`), an enum per string enum, the error",
        "//! codes, and each operation's input and output types ([`OperationShapes`]). Shapes ecsd",
        "//! renders from its records hold that JSON as it was rendered. [`acs`] and [`tcs`] hold",
        "//! the messages ecsd sends on the agent channels.",
        "",
        "use std::collections::BTreeMap;",
        "",
        "use serde::{Deserialize, Serialize};",
        "",
        "pub mod acs;",
        "pub mod tcs;",
        "",
        "/// JSON ecsd rendered from a record, kept as the text it is answered with: a response",
        "/// holding it is written out without building a tree of it first.",
        "#[derive(Clone, Debug)]",
        "pub struct Rendered(Box<serde_json::value::RawValue>);",
        "",
        "impl Rendered {",
        "    /// `value` rendered as JSON.",
        "    pub fn of(value: &impl Serialize) -> serde_json::Result<Rendered> {",
        "        serde_json::value::to_raw_value(value).map(Rendered)",
        "    }",
        "",
        "    /// JSON text rendered before (a record's stored document), checked to be JSON.",
        "    pub fn from_text(text: String) -> serde_json::Result<Rendered> {",
        "        serde_json::value::RawValue::from_string(text).map(Rendered)",
        "    }",
        "",
        "    /// The JSON text.",
        "    pub fn get(&self) -> &str {",
        "        self.0.get()",
        "    }",
        "}",
        "",
        "impl From<serde_json::Value> for Rendered {",
        "    fn from(value: serde_json::Value) -> Rendered {",
        "        // A JSON tree always renders: its keys are strings and its numbers finite.",
        "        Rendered::of(&value).unwrap_or_else(|_| Rendered(serde_json::value::RawValue::NULL.to_owned()))",
        "    }",
        "}",
        "",
        "impl PartialEq for Rendered {",
        "    fn eq(&self, other: &Rendered) -> bool {",
        "        self.get() == other.get()",
        "    }",
        "}",
        "",
        "impl Serialize for Rendered {",
        "    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {",
        "        self.0.serialize(serializer)",
        "    }",
        "}",
        "",
        "/// A message ecsd sends on an agent channel, under its shape's name.",
        "pub trait ChannelMessage: Serialize {",
        "    const KIND: &'static str;",
        "}",
        "",
    ]
    out += emit(shapes, inputs | outputs, inputs, outputs, RENDERED)
    exceptions = {n: (500 if s.get("fault") else 400) for n, s in shapes.items() if s.get("exception")}
    codes = dict(sorted({**exceptions, **PROTOCOL_ERRORS}.items()))
    out += [
        "/// An error ecsd answers with: an exception shape of the model, or an error of the",
        "/// protocol that every AWS JSON service shares.",
        "#[derive(Clone, Copy, Debug, PartialEq, Eq)]",
        "pub enum ErrorCode {",
    ]
    out += [f"    {c}," for c in codes]
    out += ["}", "", "impl ErrorCode {", "    pub const fn as_str(self) -> &'static str {", "        match self {"]
    out += [f'            ErrorCode::{c} => "{c}",' for c in codes]
    out += ["        }", "    }", "", "    /// The HTTP status AWS answers this error with.",
            "    pub const fn http_status(self) -> u16 {", "        match self {"]
    by_status = {}
    for c, status in codes.items():
        by_status.setdefault(status, []).append(c)
    for status, cs in sorted(by_status.items()):
        if status != 400:
            out.append(f"            {' | '.join('ErrorCode::' + c for c in cs)} => {status},")
    out += ["            _ => 400,", "        }", "    }", "}", ""]
    out += [
        "/// An operation's input and output shapes.",
        "pub trait OperationShapes {",
        "    type Input;",
        "    type Output;",
        "}",
        "",
        "/// One marker type per operation, for [`OperationShapes`].",
        "pub mod operation {",
    ]
    for name, op in ops.items():
        out += [f"    pub struct {name};", f"    impl super::OperationShapes for {name} {{",
                f"        type Input = super::{op['input']};", f"        type Output = super::{op['output']};",
                "    }"]
    out += ["}", ""]
    return rustfmt(out)


# The messages ecsd sends on each agent channel; `Task` of ACS is rendered by domain::acs_task.
SENT = {
    "acs": ["PayloadMessage", "HeartbeatMessage", "TaskManifestMessage", "TaskStopVerificationAck",
            "BadRequestException"],
    "tcs": ["HeartbeatMessage", "AckPublishHealth", "AckPublishInstanceStatus", "AckPublishMetric",
            "BadRequestException", "InvalidParameterException", "ServerException"],
}
CHANNEL_RENDERED = {"acs": {"Task"}, "tcs": set()}


def rust_messages(extract, channel):
    shapes = extract["shapes"]
    sent = SENT[channel]
    names = reach(shapes, sent, CHANNEL_RENDERED[channel])
    out = [
        "// @generated by tools/gen-model.py — do not edit",
        f"//! The messages ecsd sends on {channel.upper()}, from the {channel.upper()} model, and the shapes",
        "//! they hold.",
        "",
    ]
    types = emit(shapes, names, set(), names, CHANNEL_RENDERED[channel], exceptions_too=True,
                 rendered_type="super::Rendered")
    if any("BTreeMap<" in line for line in types):
        out += ["use std::collections::BTreeMap;", ""]
    out += ["use serde::Serialize;", "", "use super::ChannelMessage;", ""]
    out += types
    for name in sent:
        out += [f"impl ChannelMessage for {name} {{", f'    const KIND: &\'static str = "{name}";', "}", ""]
    return rustfmt(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("operations", nargs="*")
    args = ap.parse_args()
    out = pathlib.Path(args.out)
    operations = args.operations or list(json.loads(out.read_text())["operations"])
    text = json.dumps(extract(json.loads(pathlib.Path(args.model).read_text()), operations),
                      indent=1, sort_keys=True) + "\n"
    outputs = {out: text}
    if out.resolve() == DEFAULT_OUT.resolve():
        outputs[RUST_OUT] = rust_shapes(json.loads(text))
    elif out.stem in SENT:
        outputs[RUST_OUT.parent / "shapes" / f"{out.stem}.rs"] = rust_messages(json.loads(text), out.stem)
    for path, content in outputs.items():
        if args.check:
            if not path.exists() or path.read_text() != content:
                sys.exit(f"{path} is stale: run tools/gen-model.py")
            print(f"{path.name} matches the reference model ({len(operations)} operations)")
        else:
            path.write_text(content)
            print(f"wrote {path} ({len(operations)} operations)")


if __name__ == "__main__":
    main()
