#!/usr/bin/env python3
"""PyTorch beside every case of a pairbench report: scripts/reference.py REPORT [-o OUT]

For each workload of the report that pairbench ran and verified (one op, device and shape, the
dtype and thread count included; not those only its naive single-thread loop ran), runs the same work in PyTorch (scripts/torch_reference.py,
in the python given by --torch-python, a virtual environment of its own: scripts/reference
installs it), checked against a float64 torch computation on the same inputs before it is
timed, and writes into the report:

- pairbench.references.torch: torch's version and build, and per workload a case named
  <op>/<device>/torch/<shape> with its status, time, check, figure (GFLOP/s, GB/s or
  samples/s, from the workload's own work) and `ratio`: pairbench's best time over torch's
  (below 1, pairbench is faster);
- one Google Benchmark entry per torch case that ran (skipped ones have none) in `benchmarks`,
  as pairbench's own are written.

A torch result that fails its check, or whose figure stands above its device's ceiling or
beyond a double's range, keeps no time and no ratio. The report is written whole or not at all
(into a file beside it, renamed over it), and only when it is still a valid report. Prints the
ratio column, one line per workload, then each op family's median. Exit codes: 0 written; 1
written, with torch cases that failed their check; 2 bad input (a report that is not one, a
results file that is not torch_reference.py's output, an OUT that cannot be written, a python
without torch), nothing written."""
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile

import pbreport
import validate_report

HERE = os.path.dirname(os.path.abspath(__file__))
# Ops the reference leaves out, and why (said once in the references record).
NOT_COVERED = {"collective": "collectives need ranks; the reference runs in one process"}
# scripts/torch_reference.py's output (its header), as merge reads it.
RESULT = {"type": "object", "required": ["status"], "properties": {
    "status": {"enum": ["ok", "error", "skipped"]},
    "median_s": {"type": "number", "exclusiveMinimum": 0},
    "min_s": {"type": "number", "exclusiveMinimum": 0},
    "runs": {"type": "integer", "minimum": 1},
    "max_error": {"type": "number", "minimum": 0},
    "tolerance": {"type": "number", "minimum": 0},
    "check": {"type": "string"}, "layout": {"type": "string"}, "message": {"type": "string"}},
    "if": {"required": ["status"], "properties": {"status": {"const": "ok"}}},
    "then": {"required": ["median_s", "min_s", "runs", "max_error", "tolerance"]},
    "else": {"required": ["message"]}}
RESULTS = {"type": "object", "required": ["cases"], "properties": {
    "torch": {"type": "string"}, "build": {"type": "object"},
    "cases": {"type": "object", "additionalProperties": RESULT}}}


class ReferenceError(Exception):
    """One line saying why no reference can be written."""


def workloads(doc):
    """The report's verified workloads, one per op, device and shape (what follows the impl in a
    case's name), each with pairbench's best implementation and time there."""
    out = {}
    for c in pbreport.ok_cases(doc):
        if c["op"] in NOT_COVERED or "ranks" in c["shape"]:
            continue
        op, device, _, shape = c["name"].split("/", 3)
        name = f"{op}/{device}/torch/{shape}"
        w = out.get(name)
        if w is None:
            out[name] = w = {"name": name, "op": op, "device": device, "shape": c["shape"],
                             "dtype": c["dtype"], "threads": c["threads"],
                             "metric": c.get("metric", ""), "flops": c.get("flops", 0.0),
                             "min_bytes": c.get("min_bytes", 0.0), "items": c.get("items", 0.0),
                             "cache_resident": c.get("cache_resident", False),
                             "latency_bound": c.get("latency_bound", False)}
        t = c["time"]["median_s"]
        if "pairbench" not in w or t < w["pairbench"]["median_s"]:
            w["pairbench"] = {"impl": c["impl"], "median_s": t}
    # Where pairbench ran only its plain reference loop (naive: one thread, for checking and
    # teaching), torch has nothing of pairbench's best to stand beside.
    return [w for w in out.values() if w["pairbench"]["impl"] != "naive"]


def figure(w, seconds):
    """The workload's figure at `seconds` a call, in its metric: {"gflops": ..} and the like."""
    out = {}
    if w["flops"]:
        out["gflops"] = w["flops"] / seconds / 1e9
    if w["min_bytes"]:
        out["gbs"] = w["min_bytes"] / seconds / 1e9
    if w["items"]:
        out["samples_per_s"] = w["items"] / seconds
    return out


def above_ceiling(context, w, fig):
    """Why the torch figure cannot be true (above its device's ceiling), or None."""
    if w["metric"] == "GB/s":
        if w["cache_resident"]:
            return None
        key, value, unit = "memory", fig.get("gbs", 0.0), "GB/s"
    elif w["flops"]:
        key, value, unit = w["dtype"], fig.get("gflops", 0.0), "GFLOP/s"
    else:
        return None
    limit, why = validate_report.bound(context, w["device"], key)
    if limit and value > limit:
        return (f"{value:.1f} {unit} is above the {w['device']}'s {key} ceiling {limit:.1f} "
                f"({why}): the time cannot be true")
    return None


def checked(torch_out, where):
    """torch_out if it is scripts/torch_reference.py's output (RESULTS), else ReferenceError
    naming where it came from and its first problem."""
    found = validate_report.schema_problems(torch_out, RESULTS)
    if found:
        raise ReferenceError(f"{where}: not torch_reference.py's output: {found[0]}")
    return torch_out


def merge(doc, torch_out, wl=None):
    """doc with torch's results (scripts/torch_reference.py's output) written in: the
    references record and the Google Benchmark entries. Returns the number of failed cases."""
    wl = workloads(doc) if wl is None else wl
    results = torch_out.get("cases", {})
    cases, failed = [], 0
    for w in wl:
        r = results.get(w["name"], {"status": "skipped",
                                    "message": "torch_reference.py returned nothing for it"})
        case = {k: w[k] for k in ("name", "op", "device", "shape", "dtype", "threads", "metric")}
        case.update({"impl": "torch", "status": r["status"], "pairbench": w["pairbench"]})
        for k in ("layout", "check", "max_error", "tolerance", "message"):
            if k in r:
                case[k] = r[k]
        if r["status"] == "ok":
            fig = figure(w, r["median_s"])
            ratio = w["pairbench"]["median_s"] / r["median_s"]
            why = above_ceiling(doc["context"], w, fig)
            if not why and not all(0 < x < math.inf for x in (ratio, *fig.values())):
                why = (f"{r['median_s']:.3g} s puts its figures beyond a double's range: the time "
                       f"cannot be true")
            if not why and r.get("max_error", 0) > r.get("tolerance", math.inf):
                why = (f"torch's result is off by {r['max_error']:.3g}, above its tolerance "
                       f"{r['tolerance']:.3g}, yet said ok")
            if not why and r["min_s"] > r["median_s"]:
                why = (f"its fastest run {r['min_s']:.3g} s is slower than its median "
                       f"{r['median_s']:.3g} s: the times cannot be true")
            if why:
                case.update(status="error", message=why)
            else:
                case["time"] = {"median_s": r["median_s"], "min_s": r["min_s"],
                                "runs": r["runs"]}
                case.update(fig)
                case["ratio"] = ratio
                for k in ("cache_resident", "latency_bound"):
                    case[k] = w[k]
        failed += case["status"] == "error"
        cases.append(case)
    doc["pairbench"]["references"] = {"torch": {
        "version": torch_out.get("torch", "?"), "build": torch_out.get("build", {}),
        "ratio": "pairbench's best time over torch's on the same workload: below 1, pairbench is "
                 "faster",
        "not_covered": NOT_COVERED, "cases": cases}}
    names = {c["name"] for c in cases}
    doc["benchmarks"] = [b for b in doc["benchmarks"]
                         if b["run_name"].removesuffix("/manual_time") not in names]
    doc["benchmarks"] += [benchmark_entry(c) for c in cases if c["status"] != "skipped"]
    return failed


def benchmark_entry(c):
    """A torch case as Google Benchmark writes a manually timed entry (times in us)."""
    name = f"{c['name']}/manual_time"
    e = {"name": name, "run_name": name, "run_type": "iteration", "repetitions": 1,
         "repetition_index": 0, "threads": 1, "time_unit": "us", "label": "torch"}
    if c["status"] == "ok":
        us = 1e6 * c["time"]["median_s"]
        e.update(iterations=c["time"]["runs"], real_time=us, cpu_time=us)
        for key, counter in (("gflops", "GFLOP/s"), ("gbs", "GB/s"),
                             ("samples_per_s", "samples/s")):
            if key in c:
                e[counter] = c[key]
    else:
        e.update(iterations=0, real_time=0, cpu_time=0, error_occurred=True,
                 error_message=c.get("message", c["status"]))
    return e


def ms(s):
    return f"{1e3 * s:.3f} ms" if s < 1 else f"{s:.2f} s"


def console_lines(doc):
    """The ratio column: one line per torch case, then each op family's median and range."""
    ref = doc["pairbench"]["references"]["torch"]
    out = [f"PyTorch {ref['version']} beside pairbench: pairbench's best time / torch's "
           f"(below 1, pairbench is faster)"]
    for c in ref["cases"]:
        pb = f"{c['pairbench']['impl']} {ms(c['pairbench']['median_s'])}"
        if c["status"] == "ok":
            out.append(f"  {c['name']}: {c['ratio']:.2f}  ({pb}; torch {ms(c['time']['median_s'])}"
                       f"{', ' + c['layout'] if c.get('layout') else ''})")
        else:
            out.append(f"  {c['name']}: {c['status'].upper()}: {c.get('message', '')}")
    out += [f"  {op} on the {dev}: median {med:.2f}, {lo:.2f}-{hi:.2f} over {n} workloads"
            for op, dev, med, lo, hi, n in pbreport.reference_medians(doc)]
    return out


def run_torch(python, jobs, min_time, env=None):
    """scripts/torch_reference.py's results for jobs, run by python (stderr passes through)."""
    try:
        subprocess.run([python, "-c", "import torch"], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        raise ReferenceError(f"{python} cannot import torch: scripts/reference installs it "
                             f"(scripts/torch_venv)") from None
    with tempfile.TemporaryDirectory() as tmp:
        job = os.path.join(tmp, "jobs.json")
        with open(job, "w", encoding="utf-8") as f:
            json.dump({"min_time": min_time, "cases": jobs}, f)
        p = subprocess.run([python, os.path.join(HERE, "torch_reference.py"), job],
                           stdout=subprocess.PIPE, text=True, env=env)
    if p.returncode != 0:
        raise ReferenceError(f"torch_reference.py stopped with exit code {p.returncode}")
    try:
        return checked(json.loads(p.stdout), "torch_reference.py's result")
    except ValueError:
        raise ReferenceError("torch_reference.py wrote no JSON result") from None


def write(path, doc):
    """doc as strict JSON into path, through a file beside it renamed over it: a failure leaves
    path as it was. ReferenceError where it cannot (a non-finite number, a full disk)."""
    try:
        text = json.dumps(doc, indent=1, allow_nan=False)
    except ValueError as e:
        raise ReferenceError(f"{path} not written: {e}") from None
    path = os.path.abspath(path)
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise ReferenceError(f"cannot write {path}: {e.strerror}") from None


def main(argv=None):
    p = pbreport.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("report")
    p.add_argument("-o", "--out", help="write here (default: the report itself)")
    p.add_argument("--torch-python", default=os.path.join(HERE, "..", "build", "venv-torch",
                                                          "bin", "python"))
    p.add_argument("--min-time", type=float, default=0.5,
                   help="seconds each torch case is timed for (default 0.5)")
    p.add_argument("--results", help="merge this torch_reference.py output instead of running "
                                     "torch")
    p.add_argument("--check", action="store_true",
                   help="check the flags and the report, and stop (scripts/reference runs this "
                        "before it installs torch)")
    a = p.parse_args(argv)
    if not 0 < a.min_time <= 60:  # torch_reference.py times each case for this long
        p.error("--min-time must be a number of seconds above 0 and at most 60")
    if a.out == "":
        p.error("-o needs a file name")
    out = a.report if a.out is None else a.out
    # Without -o the report is written over itself: reading it says what is wrong with its path.
    if a.out is not None and (os.path.isdir(out)
                              or not os.path.isdir(os.path.dirname(os.path.abspath(out)))):
        p.error(f"cannot write {out}: "
                + ("a directory" if os.path.isdir(out) else "no such directory"))
    try:
        doc = pbreport.load(a.report)
        wl = workloads(doc)
        if a.check:
            return 0
        if a.results:
            torch_out = checked(pbreport.load_json(a.results), a.results)
            given = torch_out.get("cases", {})
            if wl and not given:
                raise ReferenceError(f"{a.results}: no results")
            if wl and not any(w["name"] in given for w in wl):
                raise ReferenceError(f"{a.results}: none of its {len(given)} results is a "
                                     f"workload of {a.report} (the results of another report?)")
        else:
            jobs = [{k: w[k] for k in ("name", "op", "device", "shape", "dtype", "threads")}
                    for w in wl]
            env = dict(os.environ)
            if doc["context"].get("cpu_amx") == "broken":
                # The AMX trap (DESIGN.md): torch's oneDNN dies on its first bf16 matmul.
                env["ONEDNN_MAX_CPU_ISA"] = "AVX512_CORE_FP16"
            torch_out = run_torch(a.torch_python, jobs, a.min_time, env)
        failed = merge(doc, torch_out, wl)
        found = validate_report.problems(doc)
        if found:  # what the checks above let through
            raise ReferenceError(f"not written: the report would not be valid: {found[0]}")
        write(out, doc)
    except (pbreport.ReportError, ReferenceError) as e:
        print(f"reference.py: error: {e}", file=sys.stderr)
        return 2
    print("\n".join(console_lines(doc)))
    print(out)
    return 1 if failed else 0


if __name__ == "__main__":
    pbreport.run(main)
