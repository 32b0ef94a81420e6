#!/usr/bin/env python3
"""Compares pairbench reports case by case: scripts/compare.py BASE NEW [MORE...]

Prints a side-by-side table (Markdown, or JSON with --format=json) of every case that ran in all
the reports: median time per iteration on each machine, GFLOP/s or GB/s, and the ratio to BASE.
With --fail-above PCT it exits 1 when a case is more than PCT percent slower than in BASE and
the slowdown is larger than the noise: with 3 or more repetitions on both sides
(--benchmark_repetitions), a two-sided Mann-Whitney U test at p < 0.05, as Google Benchmark's
compare.py does; otherwise the difference of the means must exceed three standard errors of
the timed iterations. A difference is also inside the noise, and said so in the table, when it
is within twice the larger robust cv of a case marked noisy, or within the drift of the machine
probes of a report whose machine changed speed under its run (context.machine_drift). Exit
codes: 0 no regression; 1 a regression; 2 bad input."""
import argparse
import json
import math
import sys

from scipy.stats import mannwhitneyu

import pbreport


def repetitions(doc, case_name):
    """Per-repetition times (seconds) of a case from Google Benchmark's entries."""
    scale = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}
    return [b["real_time"] * scale[b.get("time_unit", "s")] for b in doc["benchmarks"]
            if b.get("run_type") == "iteration" and not b.get("error_occurred")
            and b["run_name"].removesuffix("/manual_time") == case_name]


def inside_noise(base_doc, base, new_doc, new):
    """Why the difference between two records of a case is inside the noise, or None."""
    change = abs(new["time"]["median_s"] / base["time"]["median_s"] - 1.0)
    noisy = [c["time"].get("robust_cv", 0.0) for c in (base, new) if c.get("noisy")]
    if noisy and change <= 2 * max(noisy):
        return f"noisy case (robust cv {100 * max(noisy):.0f}%)"
    drift = max(pbreport.drift_spread(base_doc), pbreport.drift_spread(new_doc))
    if drift and change <= drift:
        return f"machine drift ({100 * drift:.0f}% under a run)"
    return None


def regression(base_doc, base, new_doc, new, pct):
    """(slower by more than pct and by more than the noise, how the noise was judged)."""
    change = 100.0 * (new["time"]["median_s"] / base["time"]["median_s"] - 1.0)
    if change <= pct:
        return False, "within threshold"
    a, b = repetitions(base_doc, base["name"]), repetitions(new_doc, new["name"])
    if len(a) >= 3 and len(b) >= 3:
        p = mannwhitneyu(a, b, alternative="two-sided").pvalue
        return p < 0.05, f"Mann-Whitney U p={p:.3g}"
    ta, tb = base["time"], new["time"]
    se = math.sqrt(ta["stddev_s"] ** 2 / ta["iterations"] + tb["stddev_s"] ** 2 / tb["iterations"])
    diff = tb["mean_s"] - ta["mean_s"]
    return diff > 3 * se, f"mean +{diff:.3g} s vs 3 standard errors {3 * se:.3g} s"


def rate(case):
    if case["gflops"] >= case["gbs"]:
        return f"{case['gflops']:.1f} GFLOP/s"
    return f"{case['gbs']:.1f} GB/s"


def compare(paths, docs, fail_above):
    cases = [{c["name"]: c for c in pbreport.ok_cases(d)} for d in docs]
    common = [n for n in cases[0] if all(n in other for other in cases[1:])]
    rows = []
    for name in common:
        base = cases[0][name]
        row = {"case": name, "base": {"report": paths[0], "median_s": base["time"]["median_s"],
                                      "rate": rate(base)}, "others": []}
        for path, doc, by in zip(paths[1:], docs[1:], cases[1:]):
            new = by[name]
            entry = {"report": path, "median_s": new["time"]["median_s"], "rate": rate(new),
                     "time_ratio": new["time"]["median_s"] / base["time"]["median_s"]}
            entry["inside_noise"] = inside_noise(docs[0], base, doc, new)
            if fail_above is not None:
                entry["regressed"], entry["noise"] = regression(docs[0], base, doc, new, fail_above)
                if entry["regressed"] and entry["inside_noise"]:
                    entry["regressed"], entry["excused"] = False, True
            row["others"].append(entry)
        rows.append(row)
    return rows


def fmt_time(s):
    return f"{s * 1e3:.3f} ms" if s >= 1e-3 else f"{s * 1e6:.1f} us"


def markdown(paths, docs, rows):
    lines = [f"Machines: " + "; ".join(f"[{i}] {pbreport.machine(d)} ({p})"
                                       for i, (p, d) in enumerate(zip(paths, docs)))]
    for i, d in enumerate(docs):
        if pbreport.drift_spread(d):
            lines.append(f"[{i}]: the machine changed speed under this run: its probes were "
                         f"{100 * pbreport.drift_spread(d):.0f}% apart (context.machine_drift)")
    lines.append("")
    head = "| case | [0] base |" + "".join(f" [{i}] | ratio [{i}]/[0] |" for i in range(1, len(paths)))
    lines += [head, "|" + "---|" * (2 + 2 * (len(paths) - 1))]
    for r in rows:
        cells = [r["case"], f"{fmt_time(r['base']['median_s'])} ({r['base']['rate']})"]
        for o in r["others"]:
            mark = " **regressed**" if o.get("regressed") else ""
            if o.get("inside_noise"):
                mark += f" (inside the noise: {o['inside_noise']})"
            cells += [f"{fmt_time(o['median_s'])} ({o['rate']})", f"{o['time_ratio']:.3f}{mark}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("reports", nargs="+", metavar="REPORT")
    p.add_argument("--fail-above", type=float, metavar="PCT",
                   help="exit 1 when a case is more than PCT%% slower than in BASE, beyond noise")
    p.add_argument("--format", choices=["markdown", "json"], default="markdown")
    a = p.parse_args(argv)
    if len(a.reports) < 2:
        print("compare.py: error: give a BASE report and at least one more", file=sys.stderr)
        return 2
    if a.fail_above is not None and not (math.isfinite(a.fail_above) and a.fail_above >= 0):
        print("compare.py: error: --fail-above must be a percentage >= 0", file=sys.stderr)
        return 2
    try:
        docs = [pbreport.load(r) for r in a.reports]
    except pbreport.ReportError as e:
        print(f"compare.py: error: {e}", file=sys.stderr)
        return 2
    rows = compare(a.reports, docs, a.fail_above)
    if not rows:
        print("compare.py: error: the reports have no verified case in common", file=sys.stderr)
        return 2
    if a.format == "json":
        print(json.dumps({"machines": [pbreport.machine(d) for d in docs], "cases": rows}, indent=1))
    else:
        print(markdown(a.reports, docs, rows))
    regressed = [r["case"] for r in rows for o in r["others"] if o.get("regressed")]
    excused = [r["case"] for r in rows for o in r["others"] if o.get("excused")]
    if excused:
        print(f"compare.py: {len(excused)} case(s) slower by more than {a.fail_above}% but inside "
              "the noise (noisy cases or a machine that changed speed): " + ", ".join(excused),
              file=sys.stderr)
    if regressed:
        print(f"compare.py: {len(regressed)} case(s) regressed by more than {a.fail_above}%: "
              + ", ".join(regressed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
