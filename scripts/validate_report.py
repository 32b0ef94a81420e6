#!/usr/bin/env python3
"""Checks a pairbench report: strict JSON (no NaN or Infinity), the schema, and the rules the
schema cannot say. Usage: validate_report.py REPORT... ; exit 0 valid, 1 invalid, 2 unreadable."""
import json
import pathlib
import sys

import jsonschema

SCHEMA = pathlib.Path(__file__).resolve().parent.parent / "reports" / "report.schema.json"


def _reject_constant(name):
    raise ValueError(f"non-standard JSON constant {name}")


def load_strict(path):
    """Parses as strictly as JSON.parse or serde: NaN, Infinity and -Infinity are errors."""
    with open(path, encoding="utf-8") as f:
        return json.load(f, parse_constant=_reject_constant)


def problems(doc):
    """Every way doc fails to be a pairbench report, as one line each."""
    schema = json.loads(SCHEMA.read_text())
    out = [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
           for e in jsonschema.Draft202012Validator(schema).iter_errors(doc)]
    if out:
        return out
    names = {c["name"] for c in doc["pairbench"]["cases"]}
    for b in doc["benchmarks"]:
        if b["run_name"].removesuffix("/manual_time") not in names:
            out.append(f"benchmark {b['name']} has no case record")
        if b.get("error_occurred") and b.get("real_time", 0) != 0:
            out.append(f"errored benchmark {b['name']} carries a time")
    return out


def main(argv):
    if len(argv) < 2:
        print("usage: validate_report.py REPORT...", file=sys.stderr)
        return 2
    status = 0
    for path in argv[1:]:
        try:
            doc = load_strict(path)
        except (OSError, ValueError) as e:
            print(f"{path}: not a readable JSON report: {e}", file=sys.stderr)
            return 2
        found = problems(doc)
        for p in found:
            print(f"{path}: {p}", file=sys.stderr)
        status = status or (1 if found else 0)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
