"""Reading pairbench reports for scripts/plot.py and scripts/compare.py: one clear error per bad
input (a missing file, a file that is not JSON, JSON that is not a pairbench report)."""
import validate_report


class ReportError(Exception):
    """A report that cannot be used; str() is the one-line message."""


def load(path):
    try:
        doc = validate_report.load_strict(path)
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file") from None
    except OSError as e:
        raise ReportError(f"{path}: cannot read: {e.strerror}") from None
    except ValueError as e:
        raise ReportError(f"{path}: not JSON ({e})") from None
    if not isinstance(doc, dict) or "pairbench" not in doc:
        raise ReportError(f"{path}: not a pairbench report (no 'pairbench' key)")
    found = validate_report.problems(doc)
    if found:
        raise ReportError(f"{path}: not a valid pairbench report: {found[0]}")
    return doc


def machine(doc):
    """A short name for the machine a report was measured on: host, CPU and GPU."""
    c = doc["context"]
    gpu = c.get("gpu_name") if c.get("gpu_available") else "no GPU"
    return f"{c.get('host_name', '?')}: {c.get('cpu_model', '?')}, {gpu}"


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


def ok_cases(doc):
    return [c for c in doc["pairbench"]["cases"] if c["status"] == "ok"]


def duration(hours):
    """An epoch's time in the unit that keeps it readable: 2.82 h, 6.1 min, 14.2 s."""
    if hours >= 1:
        return f"{hours:.2f} h"
    if hours * 60 >= 1:
        return f"{hours * 60:.1f} min"
    return f"{hours * 3600:.1f} s"


def projection_lines(doc):
    """One line per device: the epoch time of the projection analysis, the whole training's
    where the report has it, and end to end."""
    out = []
    pr = doc["pairbench"]["analyses"].get("projection", {})
    for dev, d in pr.get("devices", {}).items():
        training = (f", {pr['epochs']} epochs {duration(d['training_h'])}"
                    if "training_h" in d and "epochs" in pr else "")
        line = (f"{dev}: {duration(d['epoch_h'])}{training} ({d['model']}, {d['impl']} "
                f"{d.get('dtype', 'fp32')}, "
                f"batch {d['batch']}, {d['samples_per_s']:.0f} samples/s)")
        if "end_to_end" in d:
            e = d["end_to_end"]
            line += f"; end to end {duration(e['epoch_h'])} ({e['impl']})"
        out.append(line)
    return out


def apart_reason(row):
    """Why a speedup row means less than it seems (latency-bound, cache-resident, a throttled
    host), or "" when it stands as a headline figure."""
    why = [{"latency_bound": "latency-bound", "cache_resident": "cache-resident"}[x]
           for x in row.get("apart", [])]
    if "host_throttled" in row:
        why.append(row["host_throttled"]["note"])
    return "; ".join(why)
