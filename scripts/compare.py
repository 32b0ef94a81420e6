#!/usr/bin/env python3
"""Compares pairbench reports case by case: scripts/compare.py BASE NEW [MORE...]

Prints a side-by-side table (Markdown, or JSON with --format=json) of every case that ran in all
the reports: median time per iteration on each machine, its figure in the unit of its metric
(GB/s for work read in GB/s, else GFLOP/s), and the ratio to BASE
(time_ratio in JSON: null where the quotient overflows a double; no NaN or Infinity is written).
BASE's verified cases that another report failed, or did not run, are said on stderr whatever
the flags. With --fail-above PCT it exits 1 when a case verified in BASE failed in another
report, or when a case regressed: its median, the table's figure, more than PCT percent slower
than in BASE, and the slowdown larger than the noise, judged on medians
too: where there are repetitions enough (--benchmark_repetitions; 4 a side will do, 3 a side
never can) for a two-sided Mann-Whitney U test on their medians to reach p < 0.05 at all, that
test; otherwise the difference of the medians must exceed three standard errors (stddev_s over
the root of the timed iterations, each side). The table marks each case that regressed, and
says why each other case past the threshold did not ("not significant: ...", "inside the
noise: ...").

Two things excuse a slowdown, and the table says which ("inside the noise: ..."):
- a case marked noisy: the difference is within twice the larger robust cv of the two records;
- a slower machine, from the machine probes (context.machine_probes: a STREAM copy and an FMA
  loop on all cores, at the start, before each op family and at the end). For a CPU case, each
  run's probes bracketing it are found (the one in effect when the case ran, from the order of
  the `benchmarks` entries, and the next one; else the run's "before <op>" probes; else the
  run's median probe), the copy probe for a bandwidth-bound case (GB/s) and the compute probe
  otherwise, and the two runs' probes are compared point by point: before with before, after
  with after. Only when both show NEW's machine more than 5% slower than BASE's (what
  repeated probes of one steady machine scatter by) does the machine explain anything, and then
  up to the larger of the two ratios. The case's NEW times are divided by that ratio and judged
  again, threshold and noise test alike: the slowdown is excused when what is left is not a
  regression. Without --fail-above the mark is given when what is left is no slowdown, or not a
  significant one.
A run whose probes moved under it (context.machine_drift) is said so above the table, but that
excuses nothing by itself: when the two runs' probes agree, a slowdown is the code's, however
much each machine drifted within its run. GPU cases are never excused by the machine: the
probes measure the host CPU and its memory only. Exit codes: 0 no regression; 1 a regression;
2 bad input."""
import json
import math
import statistics
import sys

import pbreport

mannwhitneyu = pbreport.need("scipy.stats").mannwhitneyu

# Two runs' probes closer than this measure the same machine speed: a steady 2-vCPU VM's probes
# scatter by a few percent from one to the next (reports/samples/quick-cpu-only.json), and both
# probes around a case must show the slower machine, so one outlying probe excuses nothing.
PROBE_AGREEMENT = 0.05
PROBES = {"copy_gbs": "STREAM copy", "compute_gflops": "compute"}


def probe_metric(case):
    """The probe a case's speed follows: the STREAM copy for a bandwidth-bound case, else the
    FMA loop."""
    if case.get("metric") == "GB/s" or str(case.get("role") or "").startswith("bandwidth"):
        return "copy_gbs"
    return "compute_gflops"


def probe_windows(doc):
    """{case name: indices of the probes in effect when its entries ran}, following the order
    of the `benchmarks` entries as the harness probes: at an op change, when a few seconds have
    passed since the last probe ("before <op>"). A probe "before" a family that left no entry
    (all its cases skipped) was taken before the next family that did."""
    probes = doc["context"].get("machine_probes") or []
    ops = {c["name"]: c["op"] for c in doc["pairbench"]["cases"]}
    names = [b.get("run_name", b["name"]).removesuffix("/manual_time") for b in doc["benchmarks"]]
    seen = {ops[n] for n in names if n in ops}
    windows, k, last = {}, 0, None
    for name in names:
        op = ops.get(name)
        if op is None:
            continue
        if op != last:
            last, j = op, k + 1
            while (j < len(probes) and probes[j]["when"].startswith("before ")
                   and probes[j]["when"].removeprefix("before ") not in seen):
                j += 1
            k = j if j < len(probes) and probes[j]["when"] == f"before {op}" else j - 1
        windows.setdefault(name, set()).add(k)
    return windows


def machine_speeds(doc):
    """{case name: {probe metric: (speed before the case, speed after it)}} from the run's
    probes, for every verified case; {} when the report has no probes."""
    probes = doc["context"].get("machine_probes") or []
    if not probes:
        return {}
    windows, last = probe_windows(doc), len(probes) - 1
    out = {}
    for c in pbreport.ok_cases(doc):
        ks = sorted(windows.get(c["name"], ()))
        if not ks:
            ks = [j for j, p in enumerate(probes) if p["when"] == f"before {c['op']}"]
        speeds = {}
        for m in PROBES:
            if ks:
                speeds[m] = (statistics.median(probes[k][m] for k in ks),
                             statistics.median(probes[min(k + 1, last)][m] for k in ks))
            else:
                mid = statistics.median(p[m] for p in probes)
                speeds[m] = (mid, mid)
        out[c["name"]] = speeds
    return out


def machine_ratio(base, new, base_speeds, new_speeds):
    """How much slower NEW's machine was than BASE's around a case, as (metric, smaller, larger)
    of the two ratios BASE speed / NEW speed (before the case, after it); None when the probes
    cannot tell (a GPU case, a report without probes)."""
    if base.get("device") != "cpu" or new.get("device") != "cpu":
        return None
    b, n = base_speeds.get(base["name"]), new_speeds.get(new["name"])
    if not b or not n:
        return None
    m = probe_metric(base)
    if min(*n[m], *b[m]) <= 0:
        return None
    ratios = [b[m][0] / n[m][0], b[m][1] / n[m][1]]
    if not all(0 < r < math.inf and 1 / r < math.inf for r in ratios):
        return None  # speeds too far apart to compare as a double
    return m, min(ratios), max(ratios)


def machine_slower(machine):
    return bool(machine) and machine[1] > 1.0 + PROBE_AGREEMENT


def probes_text(machine):
    m, lo, hi = machine
    seen = f"{1 / hi:.2f}x" if f"{1 / hi:.2f}" == f"{1 / lo:.2f}" else f"{1 / hi:.2f}-{1 / lo:.2f}x"
    return f"probes {seen} ({PROBES[m]})"


def inside_noise(base, new, machine, pct):
    """Why the difference between two records of a case is inside the noise, or None. pct: the
    threshold of the gate (0 without one)."""
    change = abs(new["time"]["median_s"] / base["time"]["median_s"] - 1.0)
    noisy = [c["time"].get("robust_cv", 0.0) for c in (base, new) if c.get("noisy")]
    if noisy and change <= 2 * max(noisy):
        return f"noisy case (robust cv {100 * max(noisy):.0f}%)"
    if new["time"]["median_s"] > base["time"]["median_s"] and machine_slower(machine):
        left, how = regression(base, new, pct, scale=machine[2])
        if not left:
            rest = "" if how == "within threshold" else f", the rest not significant: {how}"
            return f"machine slower: {probes_text(machine)}{rest}"
    return None


def regression(base, new, pct, scale=1.0):
    """(slower by more than pct and by more than the noise, how the noise was judged). scale:
    what NEW's times are divided by first (how much slower its machine was)."""
    ta, tb = base["time"], new["time"]
    change = 100.0 * (tb["median_s"] / scale / ta["median_s"] - 1.0)
    if change <= pct:
        return False, "within threshold"
    a = ta["repetition_medians_s"]
    b = [t / scale for t in tb["repetition_medians_s"]]
    if 2 / math.comb(len(a) + len(b), len(a)) < 0.05:  # the U test's smallest p can pass
        p = mannwhitneyu(a, b, alternative="two-sided").pvalue
        return p < 0.05, f"Mann-Whitney U p={p:.3g}"
    se = math.hypot(ta["stddev_s"] / math.sqrt(ta["iterations"]),
                    tb["stddev_s"] / scale / math.sqrt(tb["iterations"]))
    diff = tb["median_s"] / scale - ta["median_s"]
    return diff > 3 * se, f"median {diff:+.3g} s vs 3 standard errors {3 * se:.3g} s"


def compare(paths, docs, fail_above):
    cases = [{c["name"]: c for c in pbreport.ok_cases(d)} for d in docs]
    speeds = [machine_speeds(d) for d in docs]
    common = [n for n in cases[0] if all(n in other for other in cases[1:])]
    rows = []
    for name in common:
        base = cases[0][name]
        row = {"case": name, "base": {"report": paths[0], "median_s": base["time"]["median_s"],
                                      "rate": pbreport.rate(base)}, "others": []}
        for path, by, sp in zip(paths[1:], cases[1:], speeds[1:]):
            new = by[name]
            ratio = new["time"]["median_s"] / base["time"]["median_s"]
            entry = {"report": path, "median_s": new["time"]["median_s"],
                     "rate": pbreport.rate(new),
                     "time_ratio": ratio if math.isfinite(ratio) else None}
            machine = machine_ratio(base, new, speeds[0], sp)
            if machine:  # NEW's probe speed over BASE's, before and after the case
                entry["probes"] = {"metric": machine[0], "speed_ratio": [1 / machine[2],
                                                                         1 / machine[1]]}
            entry["inside_noise"] = inside_noise(base, new, machine, fail_above or 0.0)
            if fail_above is not None:
                entry["regressed"], entry["noise"] = regression(base, new, fail_above)
                if entry["regressed"] and entry["inside_noise"]:
                    entry["regressed"], entry["excused"] = False, True
            row["others"].append(entry)
        rows.append(row)
    return rows


def lost_cases(base, new):
    """BASE's verified cases that NEW did not verify: (those whose record in NEW is an error,
    those NEW did not run: no record, or skipped)."""
    records = {c["name"]: c for c in new["pairbench"]["cases"]}
    verified = [c["name"] for c in pbreport.ok_cases(base)]
    failed = [n for n in verified if records.get(n, {}).get("status") == "error"]
    absent = [n for n in verified if records.get(n, {}).get("status") in (None, "skipped")]
    return failed, absent


def listed(names, most=5):
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def probe_lines(docs):
    """One line per report on how fast its machine probed against BASE's (medians over each
    run), when both have probes."""
    def median(d, m):
        return statistics.median(p[m] for p in d["context"].get("machine_probes") or [{m: 0}])
    out = []
    for i, d in enumerate(docs[1:], 1):
        seen = [f"{PROBES[m]} {median(d, m) / median(docs[0], m):.2f}x" for m in PROBES
                if median(d, m) > 0 and median(docs[0], m) > 0]
        if len(seen) == len(PROBES):
            out.append(f"[{i}]: its machine probes ran at {', '.join(seen)} of [0]'s (medians "
                       "over the runs; each case is weighed against the probes around it)")
    return out


def fmt_time(s):
    return f"{s * 1e3:.3f} ms" if s >= 1e-3 else f"{s * 1e6:.1f} us"


def markdown(paths, docs, rows):
    lines = [f"Machines: " + "; ".join(f"[{i}] {pbreport.machine(d)} ({p})"
                                       for i, (p, d) in enumerate(zip(paths, docs)))]
    for i, d in enumerate(docs):
        if pbreport.drift_spread(d):
            lines.append(f"[{i}]: the machine changed speed under this run: its probes were "
                         f"{100 * pbreport.drift_spread(d):.0f}% apart (context.machine_drift)")
    lines += probe_lines(docs) + [""]
    head = "| case | [0] base |" + "".join(f" [{i}] | ratio [{i}]/[0] |" for i in range(1, len(paths)))
    lines += [head, "|" + "---|" * (2 + 2 * (len(paths) - 1))]
    for r in rows:
        cells = [r["case"], f"{fmt_time(r['base']['median_s'])} ({r['base']['rate']})"]
        for o in r["others"]:
            mark = " **regressed**" if o.get("regressed") else ""
            if o.get("inside_noise"):
                mark += f" (inside the noise: {o['inside_noise']})"
            elif o.get("noise", "within threshold") != "within threshold" and not o["regressed"]:
                mark += f" (not significant: {o['noise']})"
            ratio = "overflow" if o["time_ratio"] is None else f"{o['time_ratio']:.3f}"
            cells += [f"{fmt_time(o['median_s'])} ({o['rate']})", f"{ratio}{mark}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    p = pbreport.ArgumentParser(description=__doc__.split("\n\n")[0])
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
    lost = [lost_cases(docs[0], d) for d in docs[1:]]
    if a.format == "json":
        print(json.dumps({"machines": [pbreport.machine(d) for d in docs], "cases": rows,
                          "not_verified": [{"report": p, "failed": f, "not_run": n}
                                           for p, (f, n) in zip(a.reports[1:], lost)]},
                         indent=1, allow_nan=False))
    else:
        print(markdown(a.reports, docs, rows))
    failed = []
    for path, (f, n) in zip(a.reports[1:], lost):
        if n:
            print(f"compare.py: {len(n)} case(s) verified in {a.reports[0]} did not run in {path} "
                  f"(no record, or skipped): {listed(n)}", file=sys.stderr)
        if f:
            print(f"compare.py: {len(f)} case(s) verified in {a.reports[0]} failed in {path} "
                  f"(their records say why): {', '.join(f)}", file=sys.stderr)
        failed += f
    regressed = [r["case"] for r in rows for o in r["others"] if o.get("regressed")]
    excused = [r["case"] for r in rows for o in r["others"] if o.get("excused")]
    if excused:
        print(f"compare.py: {len(excused)} case(s) slower by more than {a.fail_above}% but inside "
              "the noise (noisy cases, or a machine its probes show slower): " + ", ".join(excused),
              file=sys.stderr)
    if regressed:
        print(f"compare.py: {len(regressed)} case(s) regressed by more than {a.fail_above}%: "
              + ", ".join(regressed), file=sys.stderr)
        return 1
    return 1 if failed and a.fail_above is not None else 0


if __name__ == "__main__":
    pbreport.run(main)
