#!/usr/bin/env python3
"""Charts from pairbench reports: scripts/plot.py REPORT... -o DIR

Writes PNG and SVG charts and a one-page Markdown summary (summary.md) into DIR: speedup per op
(GPU over CPU: best of each device, kernel-only and with transfers, and like precision), parallelism (throughput against threads or SMs,
with ideal scaling), memory bandwidth (per device, % of peak; host<->device curves), batch size
(when a report has that analysis) and the roofline. Several reports (machines) share a chart
where that reads well. Exit codes: 0 written; 2 bad input."""
import argparse
import os
import sys
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import pbreport  # noqa: E402

MARKERS = "osD^v<>p*h"


def save(fig, outdir, name, written):
    for ext in ("png", "svg"):
        fig.savefig(os.path.join(outdir, f"{name}.{ext}"), dpi=110, bbox_inches="tight")
    plt.close(fig)
    written.append(name)


def note(ax, text):
    text = "\n".join(textwrap.fill(line, 70) for line in text.split("\n"))
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


# The speedup series: best of each device whatever its dtype (kernel only, then with the
# host<->device copies), then like precision against like.
SPEEDUP_SERIES = [("speedup", "best of each device"),
                  ("speedup_with_transfer", "best of each, with host<->device copies"),
                  ("speedup_fp32", "fp32 vs fp32"), ("speedup_bf16", "bf16 vs bf16"),
                  ("speedup_fp16", "fp16 vs fp16"),
                  ("speedup_gpu_tf32_vs_cpu_fp32", "GPU tf32 vs CPU fp32")]


LIKE_PRECISION = [("speedup_fp32", "fp32"), ("speedup_bf16", "bf16"), ("speedup_fp16", "fp16"),
                  ("speedup_gpu_tf32_vs_cpu_fp32", "GPU tf32 vs CPU fp32")]


def like_precision(row):
    """'fp32 3.1x, bf16 5.0x' for a speedup row, or '-'."""
    return ", ".join(f"{label} {row[key]:.1f}x" for key, label in LIKE_PRECISION if key in row) or "-"


def chart_speedup(reports, outdir, written):
    rows, labels, reasons = [], [], []
    for i, (name, doc) in enumerate(reports):
        for row in doc["pairbench"]["analyses"]["speedup"]:
            if "speedup" in row:
                rows.append(row)
                labels.append(f"{row['op']} {row['shape']}" + (f" [{i + 1}]" if len(reports) > 1 else ""))
            elif row.get("gpu_missing"):
                reasons.append(f"{name}: {row['gpu_missing']}")
    series = [(k, label) for k, label in SPEEDUP_SERIES if any(k in r for r in rows)]
    # Wide enough for every case's bars (a GPU run has about 80), the legend beside the plot.
    fig, ax = plt.subplots(figsize=(max(11, 0.2 * len(rows) + 3), 5.5))
    if rows:
        width = 0.8 / len(series)
        for j, (key, label) in enumerate(series):
            ax.bar([x - 0.4 + width * (j + 0.5) for x in range(len(rows))],
                   [r.get(key, float("nan")) for r in rows], width, label=label)
        ax.set_yscale("log")
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(list(range(len(rows))))
        ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("GPU speedup over the CPU (x, log)")
        ax.set_xlim(-0.6, len(rows) - 0.4)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    else:
        note(ax, "No GPU speedup to show:\n" + "\n".join(sorted(set(reasons)) or ["no paired cases"]))
    ax.set_title("Speedup, GPU over CPU per op and shape: best of each device, and like precision\n"
                 + "; ".join(n for n, _ in reports), fontsize=9)
    save(fig, outdir, "speedup", written)


def chart_parallelism(reports, outdir, written):
    sweeps = [(i, dev, s) for i, (_, doc) in enumerate(reports)
              for dev in ("cpu", "gpu") for s in doc["pairbench"]["analyses"]["parallelism"][dev]]
    fig, ax = plt.subplots(figsize=(8, 5))
    if not sweeps:
        note(ax, "No thread or SM sweep in these reports")
    for k, (i, dev, s) in enumerate(sweeps):
        unit = s["unit"]
        xs = [p[unit] for p in s["points"]]
        ys = [p["speedup"] for p in s["points"]]
        label = f"{s['op']}/{dev}/{s['impl']} {s['shape']}" + (f" [{i + 1}]" if len(reports) > 1 else "")
        ax.plot(xs, ys, marker=MARKERS[k % len(MARKERS)], label=label)
    if sweeps:
        top = max(max(p[s["unit"]] for p in s["points"]) for _, _, s in sweeps)
        ax.plot([1, top], [1, top], "k--", linewidth=0.8, label="ideal scaling")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_xlabel("parallel units (CPU threads or GPU SMs)")
        ax.set_ylabel("speedup over the fewest units")
        ax.legend(fontsize=7)
    ax.set_title("Parallelism\n" + "; ".join(n for n, _ in reports), fontsize=9)
    save(fig, outdir, "parallelism", written)


def chart_bandwidth(reports, outdir, written):
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 5))
    groups = []
    for i, (_, doc) in enumerate(reports):
        mb = doc["pairbench"]["analyses"]["memory_bandwidth"]
        for dev in ("cpu", "gpu"):
            if dev in mb:
                groups.append((i, dev, mb[dev]))
    if groups:
        kernels = ["copy", "scale", "add", "triad", "dot"]
        width = 0.8 / len(groups)
        for g, (i, dev, d) in enumerate(groups):
            by = {k["kernel"]: k for k in d["stream"]}
            xs = [j + g * width for j, k in enumerate(kernels) if k in by]
            ys = [by[k]["gbs"] for k in kernels if k in by]
            label = f"{dev}" + (f" [{i + 1}]" if len(reports) > 1 else "")
            if d.get("theoretical_gbs"):
                label += f" (peak {d['theoretical_gbs']:.0f} GB/s)"
            ax.bar(xs, ys, width, label=label)
            for x, k in zip(xs, [k for k in kernels if k in by]):
                pct = by[k].get("pct_of_theoretical", by[k]["pct_of_best"])
                ax.annotate(f"{pct:.0f}%", (x, by[k]["gbs"]), ha="center", va="bottom", fontsize=6)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(kernels))])
        ax.set_xticklabels(kernels)
        ax.set_ylabel("GB/s (STREAM's byte count)")
        ax.legend(fontsize=7)
        ax.set_title("STREAM, best per kernel (labels: % of peak, or of the best kernel)", fontsize=9)
    else:
        note(ax, "No STREAM results in these reports")
    curves = [(i, t) for i, (_, doc) in enumerate(reports)
              for t in doc["pairbench"]["analyses"]["memory_bandwidth"].get("transfer", [])]
    for i, t in curves:
        ax2.plot([p["bytes"] for p in t["points"]], [p["gbs"] for p in t["points"]], marker="o",
                 label=f"{t['dir']} ({t['host']})" + (f" [{i + 1}]" if len(reports) > 1 else ""))
    if curves:
        ax2.set_xscale("log", base=2)
        ax2.set_yscale("log")
        ax2.set_xlabel("bytes per copy")
        ax2.set_ylabel("GB/s")
        ax2.legend(fontsize=7)
        ax2.set_title("Host<->device copies", fontsize=9)
    else:
        note(ax2, "No host<->device copies (no GPU)")
    fig.suptitle("Memory bandwidth\n" + "; ".join(n for n, _ in reports), fontsize=9)
    save(fig, outdir, "memory_bandwidth", written)


def chart_batch(reports, outdir, written):
    fig, ax = plt.subplots(figsize=(8, 5))
    any_data = False
    for i, (_, doc) in enumerate(reports):
        bs = doc["pairbench"]["analyses"].get("batch_size", {})
        for dev, series in bs.get("devices", {}).items():
            ax.plot([p["batch"] for p in series], [p["samples_per_s"] for p in series], marker="o",
                    label=f"{dev}" + (f", {bs['model']}" if bs.get("model") else "")
                    + (f" [{i + 1}]" if len(reports) > 1 else ""))
            any_data = True
        cross = doc["pairbench"]["analyses"].get("batch_size", {}).get("crossover_batch")
        if cross:
            ax.axvline(cross, linestyle="--", color="gray",
                       label=f"crossover: the GPU ahead from batch {cross}")
    epochs = [line for _, doc in reports for line in pbreport.projection_lines(doc)]
    if any_data and epochs:
        ax.text(0.02, 0.98, "One ImageNet-1k epoch:\n" + "\n".join(epochs), transform=ax.transAxes,
                va="top", fontsize=7, bbox={"facecolor": "white", "alpha": 0.8})
    if any_data:
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_ylabel("samples/s")
        ax.legend()
    else:
        note(ax, "No batch-size analysis in these reports yet\n(it comes with the training step)")
    ax.set_title("Batch size\n" + "; ".join(n for n, _ in reports), fontsize=9)
    save(fig, outdir, "batch_size", written)


def chart_roofline(reports, outdir, written):
    devices = [(i, dev, r) for i, (_, doc) in enumerate(reports)
               for dev, r in doc["pairbench"]["analyses"]["roofline"].items()]
    fig, ax = plt.subplots(figsize=(8, 6))
    if not devices:
        note(ax, "No cases with FLOPs in these reports")
    for k, (i, dev, r) in enumerate(devices):
        pts = r["points"]
        suffix = f" [{i + 1}]" if len(reports) > 1 else ""
        ax.scatter([p["intensity"] for p in pts], [max(p["gflops"], 1e-3) for p in pts], s=12,
                   marker=MARKERS[k % len(MARKERS)], label=f"{dev} cases{suffix}")
        lo = min(p["intensity"] for p in pts) / 2
        hi = max(p["intensity"] for p in pts) * 2
        for kind, style in (("measured", "-"), ("theoretical", ":")):
            f, b = r.get(f"{kind}_gflops"), r.get(f"{kind}_gbs")
            if f and b:
                xs = [lo * (hi / lo) ** (j / 50) for j in range(51)]
                ax.plot(xs, [min(f, x * b) for x in xs], style, label=f"{dev} {kind} ceiling{suffix}")
            elif f:
                ax.axhline(f, linestyle=style, linewidth=0.8, label=f"{dev} {kind} peak{suffix}")
    if devices:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("arithmetic intensity (FLOP per minimum byte)")
        ax.set_ylabel("GFLOP/s")
        ax.legend(fontsize=7)
    ax.set_title("Roofline\n" + "; ".join(n for n, _ in reports), fontsize=9)
    save(fig, outdir, "roofline", written)


def summary(reports, written):
    lines = ["# pairbench summary", ""]
    for i, (name, doc) in enumerate(reports):
        c = doc["context"]
        lines.append(f"{i + 1}. **{name}**: {c.get('cpu_logical_cores', '?')} CPUs, OpenBLAS core "
                     f"{c.get('openblas_core', '?')}, suite {c.get('suite', '?')}, "
                     f"{c.get('date', '?')}, pairbench {c.get('pairbench_version', '?')} "
                     f"({c.get('pairbench_git_revision', '?')})"
                     + ("" if c.get("gpu_available") else f"; no GPU: {c.get('gpu_reason', '?')}"))
        if pbreport.drift_line(doc):
            lines.append(f"   - **warning:** {pbreport.drift_line(doc)}")
    def side(s):
        if not s:
            return "-"
        if s["gflops"] >= s.get("gbs", 0):
            return f"{s['impl']} {s['dtype']} {s['gflops']:.1f} GFLOP/s"
        return f"{s['impl']} {s['dtype']} {s['gbs']:.1f} GB/s"

    # Rows whose figures mean less than they seem go to a table of their own, with why.
    head = "| machine | op | shape | best CPU | best GPU | GPU speedup | like precision |"
    tables = {False: [], True: []}
    for i, (_, doc) in enumerate(reports):
        for row in doc["pairbench"]["analyses"]["speedup"]:
            speed = (f"{row['speedup']:.1f}x ({row['speedup_with_transfer']:.1f}x with copies)"
                     if "speedup" in row else "-")
            why = pbreport.apart_reason(row)
            tables[bool(why)].append(
                f"| {i + 1} | {row['op']} | {row['shape']} | {side(row['cpu'])} | "
                f"{side(row['gpu'])} | {speed} | {like_precision(row)} |"
                + (f" {why} |" if why else ""))
    lines += ["", head, "|---|---|---|---|---|---|---|"] + tables[False]
    if tables[True]:
        lines += ["", "Apart: figures that mean less than they seem (latency-bound: under 20 us, "
                  "launch or fork-join latency as much as work; cache-resident: work read in GB/s "
                  "whose working set fits the last-level cache; a throttled host):", "",
                  head + " why |", "|---|---|---|---|---|---|---|---|"] + tables[True]
    for i, (_, doc) in enumerate(reports):
        epochs = pbreport.projection_lines(doc)
        if epochs:
            pr = doc["pairbench"]["analyses"]["projection"]
            lines += ["", f"One epoch of ImageNet-1k ({int(pr['images'])} images), machine {i + 1}:", ""]
            lines += [f"- {e}" for e in epochs]
            lines += ["", f"The claim: {pr['claim']}. {pr['note']}."]
    lines.append("")
    for name in written:
        lines += [f"![{name}]({name}.png)", ""]
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("reports", nargs="+", metavar="REPORT")
    p.add_argument("-o", "--outdir", required=True, metavar="DIR")
    a = p.parse_args(argv)
    try:
        docs = [pbreport.load(r) for r in a.reports]
    except pbreport.ReportError as e:
        print(f"plot.py: error: {e}", file=sys.stderr)
        return 2
    try:
        os.makedirs(a.outdir, exist_ok=True)
    except OSError as e:
        print(f"plot.py: error: cannot create {a.outdir}: {e.strerror}", file=sys.stderr)
        return 2
    reports = [(pbreport.machine(d), d) for d in docs]
    written = []
    for chart in (chart_speedup, chart_parallelism, chart_bandwidth, chart_batch, chart_roofline):
        chart(reports, a.outdir, written)
    with open(os.path.join(a.outdir, "summary.md"), "w", encoding="utf-8") as f:
        f.write(summary(reports, written))
    print(os.path.join(a.outdir, "summary.md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
