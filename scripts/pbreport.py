"""Reading pairbench reports for the scripts that do (plot.py, compare.py, gpu_verdict.py,
reference.py): one clear error per bad input (a missing file, a file that is not JSON, JSON that
is not a valid pairbench report), and usage errors in one line."""
import argparse
import collections
import contextlib
import os
import statistics
import sys

import validate_report

need = validate_report.need  # a third-party module, or one line and exit 2

class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser whose usage errors are one line, as pairbench's own are:
    'compare.py: error: ... (see --help)', exit 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def run(main):
    """sys.exit(main()), where an output the script cannot write (a full disk, a folder where a
    file was to go, a pipe closed early) is one line and exit 2, not a traceback whose exit
    status means something else (1: a regression to compare.py, a failed verdict to
    gpu_verdict.py)."""
    prog = os.path.basename(sys.argv[0])
    try:
        status = main()
        if sys.stdout is not None:  # None: started with stdout closed, and print() did nothing
            sys.stdout.flush()
    except OSError as e:
        if sys.stdout is not None:
            # What stdout still holds would fail again when Python flushes it on the way out.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        if not isinstance(e, BrokenPipeError):  # a reader that stopped (| head) wants no word
            where = f"{e.filename}: " if e.filename else ""
            with contextlib.suppress(OSError):
                print(f"{prog}: error: {where}{e.strerror or e}", file=sys.stderr)
        status = 2
    sys.exit(status)


class ReportError(Exception):
    """A report that cannot be used; str() is the one-line message."""


def load_json(path):
    """The JSON in path, strictly (no NaN), or ReportError saying why not."""
    try:
        return validate_report.load_strict(path)
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file") from None
    except OSError as e:
        raise ReportError(f"{path}: cannot read: {e.strerror}") from None
    except ValueError as e:
        raise ReportError(f"{path}: not JSON ({e})") from None


def load(path):
    """The report in path, checked by validate_report.problems (the schema and the rules it
    cannot say), or ReportError naming the file and its first problem: every script reads
    reports through here."""
    doc = load_json(path)
    if not isinstance(doc, dict) or "pairbench" not in doc:
        raise ReportError(f"{path}: not a pairbench report (no 'pairbench' key)")
    found = validate_report.problems(doc)
    if found:
        raise ReportError(f"{path}: not a valid pairbench report: {found[0]}")
    return doc


def printable(s, limit=80):
    """s on one line a title or a table can hold: each character that is not printable (a
    newline, an escape, a direction override) as '?', and at most `limit` characters."""
    s = "".join(ch if ch.isprintable() else "?" for ch in str(s))
    return s if len(s) <= limit else s[:limit - 3] + "..."


def machine(doc):
    """A short name for the machine a report was measured on: host, CPU and GPU."""
    c = doc["context"]
    gpu = c.get("gpu_name") if c.get("gpu_available") else "no GPU"
    return (f"{printable(c.get('host_name', '?'), 60)}: {printable(c.get('cpu_model', '?'))}, "
            f"{printable(gpu, 60)}")


def drift_spread(doc):
    """How far the machine's own speed moved under a run (0 when it did not change)."""
    d = doc["context"].get("machine_drift") or {}
    if not d.get("changed"):
        return 0.0
    return max(d.get(m, {}).get("spread", 0.0) for m in ("copy_gbs", "compute_gflops"))


def drift_line(doc):
    """One line on how the machine's speed moved under the run, or None when it held."""
    if not drift_spread(doc):
        return None
    d = doc["context"]["machine_drift"]
    seen = [f"{name} {d[key]['min']:.1f}-{d[key]['max']:.1f} {unit}"
            for key, name, unit in (("copy_gbs", "STREAM copy", "GB/s"),
                                    ("compute_gflops", "compute", "GFLOP/s")) if key in d]
    return (f"the machine changed speed under the run ({', '.join(seen)} over {d['probes']} "
            f"probes): its CPU times, and the speedups over them, move with it; run again on a "
            f"quiet machine")


def rate(x):
    """A case's or a speedup side's figure in its metric's unit, as the console writes it: GB/s
    for work read in GB/s, else GFLOP/s (a training step's too, its samples/s said apart); a
    side from before sides carried their metric, by the larger of its two figures."""
    metric = x.get("metric") or ("GFLOP/s" if x["gflops"] >= x.get("gbs", 0) else "GB/s")
    if metric == "GB/s":
        return f"{x['gbs']:.1f} GB/s"
    return f"{x['gflops']:.1f} GFLOP/s"


def ok_cases(doc):
    return [c for c in doc["pairbench"]["cases"] if c["status"] == "ok"]


def duration(hours):
    """An epoch's time in the unit that keeps it readable: 2.82 h, 6.1 min, 14.2 s."""
    if hours >= 1:
        return f"{hours:.2f} h"
    if hours * 60 >= 1:
        return f"{hours * 60:.1f} min"
    return f"{hours * 3600:.1f} s"


def kwh(x):
    """Energy to three significant figures, or whole kWh from 100 up: 0.01 kWh, 1,234 kWh."""
    return f"{x:,.0f} kWh" if x >= 100 else f"{x:.3g} kWh"


def usd(x):
    """Dollars in cents, or to two significant figures under 10 cents: $10.17, $0.0056."""
    return f"${x:,.2f}" if x >= 0.1 or x == 0 else f"${x:.2g}"


def energy_and_cost(d):
    """What an epoch and the training take in energy and (with a price) dollars on a device of
    the projection: 'energy 0.01 kWh an epoch, 0.902 kWh the training (67 W); $0.11 an
    epoch, $10.17 the training at $0.80/h', 'energy: unavailable (why)', or "" for a report
    from before energy was metered."""
    out = []
    if "epoch_kwh" in d:
        out.append(f"energy {kwh(d['epoch_kwh'])} an epoch, {kwh(d['training_kwh'])} the "
                   f"training ({d['mean_power_w']:.0f} W)")
    elif "energy" in d:
        out.append(f"energy: unavailable ({d['energy']['reason']})")
    if "epoch_usd" in d:
        out.append(f"{usd(d['epoch_usd'])} an epoch, {usd(d['training_usd'])} the training at "
                   f"{usd(d['usd_per_hour'])}/h")
    return "; ".join(out)


def projection_lines(doc, energy=True):
    """One line per device: the epoch time of the projection analysis, the whole training's
    where the report has it, end to end, and (energy) the energy and dollars of both."""
    out = []
    pr = doc["pairbench"]["analyses"].get("projection", {})
    for dev, d in pr.get("devices", {}).items():
        training = (f", {pr['epochs']} epochs {duration(d['training_h'])}"
                    if "training_h" in d and "epochs" in pr else "")
        line = (f"{dev}: {duration(d['epoch_h'])}{training} ({d['model']}, {d['impl']} "
                f"{d.get('dtype', 'fp32')}, "
                f"batch {d['batch']}"
                + (f", {d['image']}x{d['image']} images" if "image" in d else "")
                + f", {d['samples_per_s']:.0f} samples/s)")
        if "host_throttled" in d:
            line += f" [{d['host_throttled']['note']}]"
        if "end_to_end" in d:
            e = d["end_to_end"]
            line += f"; end to end {duration(e['epoch_h'])} ({e['impl']})"
        if energy and energy_and_cost(d):
            line += f"; {energy_and_cost(d)}"
        out.append(line)
    return out


def ratio_line(doc):
    """How many times the CPU's epoch costs the GPU's, in dollars and energy, or None."""
    pr = doc["pairbench"]["analyses"].get("projection", {})
    said = [f"{pr[key]:.2f}x the {what}" for key, what in (("cost_cpu_over_gpu", "dollars"),
                                                           ("energy_cpu_over_gpu", "energy"))
            if key in pr]
    if not said:
        return None
    board = (" (energy: the CPU's package and DRAM against the GPU's board alone, not its host)"
             if "energy_cpu_over_gpu" in pr else "")
    return f"An epoch on the CPU takes {' and '.join(said)} of one on the GPU{board}."


def energy_lines(doc):
    """The report's energy analysis, one line per device: the meter (source, idle power, cases
    metered and their power range) or why there is none, and the GPU's throttled cases; then
    the CPU's effective clock. [] for a report from before energy was metered."""
    en = doc["pairbench"]["analyses"].get("energy", {})
    out = []
    for dev, d in en.get("devices", {}).items():
        if d["status"] != "ok":
            out.append(f"{dev}: unavailable ({d['reason']})")
            continue
        line = (f"{dev}: {d['source']}; idle {d['idle_power_w']:.1f} W; "
                f"{d['cases_metered']} cases metered")
        if "power_w" in d:
            p = d["power_w"]
            line += f", {p['min']:.1f}-{p['max']:.1f} W (median {p['median']:.1f} W)"
        if d.get("cases_unmetered"):
            line += "; not metered: " + ", ".join(f"{n} ({why})"
                                                  for why, n in d["cases_unmetered"].items())
        out.append(line)
        if d.get("throttled_cases"):
            reasons = collections.Counter(r for t in d["throttled_cases"]
                                          for r in t["clock_event_reasons"])
            out.append(f"{dev} throttled in {len(d['throttled_cases'])} case(s): "
                       + ", ".join(f"{r} ({n})" for r, n in sorted(reasons.items())))
    clock = en.get("cpu_effective_clock")
    if isinstance(clock, list):
        out.append("CPU effective clock: " + ", ".join(f"{c['when']} {c['effective_ghz']:.2f} GHz"
                                                       for c in clock))
    elif clock:
        out.append(f"CPU effective clock: unavailable ({clock['reason']})")
    return out


def scaling_lines(doc):
    """The report's scaling analysis: one line per data-parallel step (samples/s, efficiency
    against its grads=local twin, measured over the ring model's prediction) and one per
    device and model projected to cluster sizes. [] where none ran."""
    sc = doc["pairbench"]["analyses"].get("scaling", {})
    out = []
    for s in sc.get("steps", []):
        line = (f"{s['device']} {s['impl']} {s['model']} {s.get('dtype', 'fp32')}, {s['ranks']} ranks "
                f"x batch {s['batch']:.0f}: {s['samples_per_s']:.0f} samples/s")
        if "efficiency" in s:
            line += (f", {100 * s['efficiency']:.0f}% of the step without the all-reduce "
                     f"({s['local_samples_per_s']:.0f} samples/s)")
        if "measured_over_predicted" in s:
            line += f"; {s['measured_over_predicted']:.2f}x the ring model"
        out.append(line)
    for c in sc.get("cluster", []):
        sizes = {z["ranks"]: z for z in c["sizes"]}
        shown = "; ".join(f"{n}: {duration(sizes[n]['epoch_h'])} ({100 * sizes[n]['efficiency']:.0f}%)"
                          for n in (1, 8, 64, 1024) if n in sizes)
        out.append(f"{c['device']} {c['model']} on N devices at {c['busbw_gbs']:.1f} GB/s busbw "
                   f"({c['busbw_source']}), an epoch: {shown}")
    return out


def sentence(text):
    """text as a sentence: its first letter capital, a full stop at the end."""
    return f"{text[:1].upper()}{text[1:]}."


def apart_reason(row):
    """Why a speedup row means less than it seems (latency-bound, cache-resident, a throttled
    host), or "" when it stands as a headline figure."""
    why = [{"latency_bound": "latency-bound", "cache_resident": "cache-resident"}[x]
           for x in row.get("apart", [])]
    if "host_throttled" in row:
        why.append(row["host_throttled"]["note"])
    return "; ".join(why)


def not_run_reason(row, doc):
    """Why a speedup row has neither a CPU nor a GPU figure: the CPU's reason, and the GPU's
    where it differs (a report from before cpu_missing: the message of its first CPU case)."""
    cpu = row.get("cpu_missing") or next(
        (c.get("message", c["status"]) for c in doc["pairbench"]["cases"]
         if c["op"] == row["op"] and c["device"] == "cpu" and c["status"] != "ok"
         and c["name"].split("/", 3)[-1].startswith(row["shape"] + ",")),
        "its cases did not run")
    gpu = row.get("gpu_missing", cpu)
    return cpu if gpu in (cpu, "") or gpu.startswith("no GPU") else f"{cpu}; GPU: {gpu}"


def reference_medians(doc, framework="torch"):
    """Per op and device, the median and range of pairbench's best time over the framework's
    (pairbench.references): [(op, device, median, low, high, workloads)], [] without one."""
    ref = doc["pairbench"].get("references", {}).get(framework)
    by_op = collections.defaultdict(list)
    for c in ref["cases"] if ref else []:
        if c["status"] == "ok":
            by_op[(c["op"], c["device"])].append(c["ratio"])
    return [(op, dev, statistics.median(v), min(v), max(v), len(v))
            for (op, dev), v in sorted(by_op.items())]
