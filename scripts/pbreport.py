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


def ok_cases(doc):
    return [c for c in doc["pairbench"]["cases"] if c["status"] == "ok"]


def projection_lines(doc):
    """One line per device: the epoch time of the projection analysis (and end to end)."""
    out = []
    for dev, d in doc["pairbench"]["analyses"].get("projection", {}).get("devices", {}).items():
        line = (f"{dev}: {d['epoch_h']:.2f} h ({d['model']}, {d['impl']}, batch {d['batch']}, "
                f"{d['samples_per_s']:.0f} samples/s)")
        if "end_to_end" in d:
            line += f"; end to end {d['end_to_end']['epoch_h']:.2f} h ({d['end_to_end']['impl']})"
        out.append(line)
    return out
