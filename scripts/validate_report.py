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


TIME_UNITS = ("ns", "us", "ms", "s")


def ci_tool_problems(doc):
    """What Bencher's cpp_google adapter and github-action-benchmark's googlecpp parser need of
    every entry of `benchmarks`, as one line each: a name of 1 to 1024 characters, numeric
    real_time and cpu_time, a time_unit they know, an iteration count (and no NaN, which
    load_strict already refuses)."""
    out = []
    for i, b in enumerate(doc.get("benchmarks", [])):
        name = b.get("name")
        where = f"benchmarks/{i} ({name})"
        if not isinstance(name, str) or not 1 <= len(name) <= 1024:
            out.append(f"{where}: name must be a string of 1 to 1024 characters")
        for key in ("real_time", "cpu_time"):
            if isinstance(b.get(key), bool) or not isinstance(b.get(key), (int, float)):
                out.append(f"{where}: {key} must be a number")
        if b.get("time_unit") not in TIME_UNITS:
            out.append(f"{where}: time_unit must be one of {', '.join(TIME_UNITS)}")
        if isinstance(b.get("iterations"), bool) or not isinstance(b.get("iterations"), int):
            out.append(f"{where}: iterations must be an integer")
    return out


def problems(doc):
    """Every way doc fails to be a pairbench report, as one line each."""
    schema = json.loads(SCHEMA.read_text())
    out = [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
           for e in jsonschema.Draft202012Validator(schema).iter_errors(doc)]
    if out:
        return out
    out += ci_tool_problems(doc)
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
