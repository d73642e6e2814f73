#!/usr/bin/env python3
"""Extract the part of the ECS API model that ecsd implements.

Reads the full botocore-style model, keeps the named operations and every shape they reach
(inputs, outputs, errors), drops documentation, and writes compact, sorted JSON. The output is
committed as crates/ecsd/model/ecs.json; `--check` fails when it differs from a fresh run, so the
embedded model can never drift from the reference. The agent channels' models are extracted the
same way (`--model ../shared/reference/acs-api-2.json --out crates/ecsd/model/acs.json`, and
likewise for TCS).

Usage:
  tools/gen-model.py [--check] [--model PATH] [--out PATH] [OPERATION ...]
With no OPERATION, the operations already listed in the output file are kept.
"""
import argparse
import json
import pathlib
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
    if args.check:
        if out.read_text() != text:
            sys.exit(f"{out} is stale: run tools/gen-model.py")
        print(f"{out.name} matches the reference model ({len(operations)} operations)")
    else:
        out.write_text(text)
        print(f"wrote {out} ({len(operations)} operations)")


if __name__ == "__main__":
    main()
