#!/usr/bin/env python3
"""Charts from pairbench reports: scripts/plot.py REPORT... -o DIR

Writes PNG and SVG charts and a one-page Markdown summary (summary.md, opening with the answer:
each op family's like-precision speedup and each device's epoch) into DIR: the projection
first (per device, the time, energy and dollars of one ImageNet-1k epoch and of a whole training,
beside the claim), speedup (GPU over CPU, one panel per op family: best of each device,
kernel-only and with transfers, and like precision), parallelism (throughput against threads or SMs,
with ideal scaling), memory bandwidth (per device, % of peak; host<->device curves), batch size
(when a report has that analysis) and the roofline. Several reports (machines) share a chart
where that reads well. Exit codes: 0 written; 2 bad input."""
import collections
import errno
import os
import shutil
import statistics
import sys
import tempfile
import textwrap
import warnings

import pbreport

matplotlib = pbreport.need("matplotlib")
matplotlib.use("Agg")
plt = pbreport.need("matplotlib.pyplot")
transforms = pbreport.need("matplotlib.transforms")
Patch = pbreport.need("matplotlib.patches").Patch
NullFormatter = pbreport.need("matplotlib.ticker").NullFormatter

MARKERS = "osD^v<>p*h"
# Every chart plot.py draws, by file name (each as .png and .svg).
CHARTS = ("projection", "speedup", "torch", "parallelism", "memory_bandwidth", "batch_size",
          "roofline")


def save(fig, outdir, name, written):
    for ext in ("png", "svg"):
        fig.savefig(os.path.join(outdir, f"{name}.{ext}"), dpi=110, bbox_inches="tight")
    plt.close(fig)
    written.append(name)


def note(ax, text, width=70):
    text = "\n".join(textwrap.fill(line, width) for line in text.split("\n"))
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


# The projection chart's panels: what is shown, its unit, the keys of one epoch and of the whole
# training in a device's projection, and how a bar's value is written.
PROJECTION_PANELS = [("Time", "hours", "epoch_h", "training_h", pbreport.duration),
                     ("Energy", "kWh", "epoch_kwh", "training_kwh", pbreport.kwh),
                     ("Cost", "USD", "epoch_usd", "training_usd", pbreport.usd)]


def missing_bar(d, title):
    """Why a device's projection has no bar in a panel."""
    if title == "Energy":
        return (f"energy unavailable: {d['energy']['reason']}" if "energy" in d
                else "energy not in this report")
    return "no price given (--price)"


# The claim the projection answers, in hours of a whole training: about a week on a CPU, 5-10
# hours on a GPU.
CLAIM_H = {"cpu": (168, 168, "claim: a week (168 h)"), "gpu": (5, 10, "claim: 5-10 h")}


def claim_beside(ax, x, dev):
    """The claim's hours for a device across its bar group at x: a line, or a band; labelled
    above the epoch's bar (far shorter than the training's)."""
    lo, hi, label = CLAIM_H[dev]
    if lo == hi:
        ax.hlines(lo, x - 0.45, x + 0.45, color="C3", linestyle="--", zorder=3)
    else:
        ax.fill_between([x - 0.45, x + 0.45], lo, hi, color="C3", alpha=0.25, zorder=3)
    ax.annotate(label, (x - 0.43, hi), xytext=(0, 3), textcoords="offset points", ha="left",
                va="bottom", fontsize=7, color="C3")


def chart_projection(reports, outdir, written):
    """The headline: per device, the time, energy (where metered) and dollars (with --price) of
    one ImageNet-1k epoch and of a whole training, the claim beside the hours."""
    analyses = [doc["pairbench"]["analyses"] for _, doc in reports]
    projections = [(i, a["projection"]) for i, a in enumerate(analyses) if "projection" in a]
    groups = []  # (tick label, device, the device's projection)
    for i, pr in projections:
        for dev, d in pr["devices"].items():
            groups.append((f"{dev}" + (f" [{i + 1}]" if len(reports) > 1 else "")
                           + f"\n{d['model']}, {d['impl']} {d.get('dtype', 'fp32')}\n"
                           f"batch {d['batch']}"
                           + (f", {d['image']}x{d['image']} images" if "image" in d else ""), dev, d))
    # Time always; energy where any device has its figure or the reason it has none; dollars
    # where any device has a price.
    panels = [p for p in PROJECTION_PANELS if p[0] == "Time" or any(
        p[2] in d or (p[0] == "Energy" and "energy" in d) for _, _, d in groups)]
    width = max(7, max(5, 1.6 * len(groups)) * len(panels))
    fig, axes = plt.subplots(1, len(panels), figsize=(width, 5.5), squeeze=False)
    epochs = sorted({str(pr.get("epochs", "?")) for _, pr in projections})
    for ax, (title, unit, epoch_key, training_key, fmt) in zip(axes[0], panels):
        ax.set_title(f"{title} ({unit}, log scale)", fontsize=9)
        if not groups:
            note(ax, "No training step in these reports: nothing to project", width=45)
            continue
        if not any(epoch_key in d for _, _, d in groups):
            note(ax, "\n".join(f"{label.split(chr(10))[0]}: {missing_bar(d, title)}"
                               for label, _, d in groups), width=45)
            continue
        ax.set_yscale("log")
        values = []
        for offset, key, label in ((-0.2, epoch_key, "one epoch"), (0.2, training_key,
                                   f"whole training ({', '.join(epochs)} epochs)")):
            # Only figures above 0 have a bar on a log scale (a price of 0 is written instead).
            xs = [x + offset for x, (_, _, d) in enumerate(groups) if d.get(key, 0) > 0]
            ys = [d[key] for _, _, d in groups if d.get(key, 0) > 0]
            bars = ax.bar(xs, ys, 0.4, label=label, color="C0" if key == epoch_key else "C1")
            ax.bar_label(bars, [fmt(y) for y in ys], fontsize=7)
            values += ys
        beside = transforms.blended_transform_factory(ax.transData, ax.transAxes)
        for x, (_, dev, d) in enumerate(groups):
            if d.get(epoch_key, 0) <= 0:
                why = fmt(0) if epoch_key in d else missing_bar(d, title)
                ax.text(x, 0.03, textwrap.fill(why, 24), transform=beside,
                        ha="center", va="bottom", fontsize=7, color="dimgray")
            if title == "Time":  # the claim, beside each device's whole training
                claim_beside(ax, x, dev)
        lo, hi = min(values, default=1), max(values, default=1)
        if title == "Time":
            lo, hi = min(lo, CLAIM_H["gpu"][0]), max(hi, CLAIM_H["cpu"][1])
        ax.set_ylim(lo / 4, hi * 10)
        ax.set_xticks(list(range(len(groups))))
        ax.set_xticklabels([label for label, _, _ in groups], fontsize=8)
        ax.set_xlim(-0.7, len(groups) - 0.3)
        ax.set_ylabel(unit)
        if values:
            ax.legend(fontsize=7, loc="upper left")
    if projections:
        notes = [f"{f'[{i + 1}] ' if len(reports) > 1 else ''}{pbreport.sentence(pr['note'])}"
                 for i, pr in projections]
        fig.text(0.5, -0.02, textwrap.fill(f"The claim: {projections[0][1]['claim']}. "
                                           + " ".join(notes), 16 * width),
                 ha="center", va="top", fontsize=8)
    fig.suptitle("One ImageNet-1k epoch and a whole training, per device\n"
                 + "; ".join(n for n, _ in reports), fontsize=9)
    fig.tight_layout()
    save(fig, outdir, "projection", written)


def power_of_two(v):
    """'2^20' for 1048576 and the like (from 2^10 up), else v as it is."""
    n = int(v) if v.isascii() and v.isdigit() else 0  # '²' is a digit int() refuses
    return f"2^{n.bit_length() - 1}" if n >= 1024 and n & (n - 1) == 0 else v


def short_label(op, shape, varying):
    """A case's label in its op's panel: the shape in a few characters ('fwd b8 64x56x56>64
    3x3', '1760x32x1760 ta', 'resnet50 train b8 64px'), or the values of the keys that vary
    within the panel ('gelu_erf bwd 2^20')."""
    kv = dict(p.split("=", 1) for p in shape.split(",") if "=" in p)
    extra = "".join(f" {kv[k]}" if k == "dtype" else f" {kv[k]}t"
                    for k in ("dtype", "threads") if k in varying and k in kv)
    try:
        return special_label(op, kv) + extra
    except KeyError:
        return " ".join(f"{k}={power_of_two(kv[k])}" if kv[k].isdigit() else kv[k]
                        for k in varying if k in kv) or shape


def special_label(op, kv):
    """The few characters that name a conv, GEMM or training case; KeyError for the others."""
    if op == "conv":
        stride = f"/{kv['stride']}" if kv.get("stride", "1") != "1" else ""
        return (f"{kv['dir']} b{kv['batch']} {kv['c']}x{kv['h']}x{kv['w']}>{kv['k']} "
                f"{kv['r']}x{kv.get('s', kv['r'])}{stride}")
    if op == "gemm":
        return f"{kv['m']}x{kv['n']}x{kv['k']}" + "".join(
            f" {t}" for t in ("ta", "tb") if kv.get(t) == "1")
    if op == "train":
        return (f"{kv['model']} {kv['pass']} b{kv['batch']}"
                + (f" {kv['image']}px" if "image" in kv else ""))
    raise KeyError(op)


# The markers of the like-precision series and of the copies on the speedup chart.
SPEEDUP_MARKERS = {"speedup_with_transfer": ("x", "dimgray"), "speedup_fp32": ("o", "C1"),
                   "speedup_bf16": ("s", "C2"), "speedup_fp16": ("D", "C4"),
                   "speedup_gpu_tf32_vs_cpu_fp32": ("^", "C5")}


def family_panels(by_op, xlabel, title, n_reports):
    """A figure of horizontal-bar panels, one per op family, each family's items sorted by
    value: by_op maps a panel's title (the op first) to [(machine index, shape string, value,
    pale)]. Returns the figure
    and, per panel, (axes, its items in drawing order, their y positions)."""
    heights = [len(items) + 1.5 for items in by_op.values()]
    fig, axes = plt.subplots(len(by_op), 1, figsize=(9, 0.24 * sum(heights) + 1.5), sharex=True,
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    panels = []
    for ax, (op, items) in zip(axes[:, 0], by_op.items()):
        items = sorted(items, key=lambda it: it[2])
        keys = [dict(p.split("=", 1) for p in it[1].split(",") if "=" in p) for it in items]
        varying = [k for k in keys[0] if len({kv.get(k) for kv in keys}) > 1]
        labels = [short_label(op.split(" ")[0], shape, varying) + ("*" if pale else "")
                  + (f" [{i + 1}]" if n_reports > 1 else "") for i, shape, _, pale in items]
        ys = list(range(len(items)))
        bars = ax.barh(ys, [it[2] for it in items], 0.7,
                       color=[PALE if it[3] else "C0" for it in items])
        ax.bar_label(bars, [f"{it[2]:.2g}" if it[2] < 10 else f"{it[2]:.0f}" for it in items],
                     fontsize=6, padding=2)
        ax.set_xscale("log")
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_yticks(ys)
        ax.set_yticklabels(labels, fontsize=7)
        ax.set_ylim(-0.7, len(items) - 0.3)
        ax.set_title(op, fontsize=9, loc="left")
        ax.tick_params(axis="x", labelsize=7, labelbottom=True)
        ax.xaxis.set_minor_formatter(NullFormatter())
        panels.append((ax, items, ys))
    axes[-1, 0].set_xlabel(xlabel)
    fig.suptitle(title, fontsize=9)
    return fig, panels


def finish_panels(fig, handles, outdir, name, written):
    """The legend above the panels, the layout, the files."""
    fig.legend(list(handles.values()), list(handles), fontsize=7, loc="upper right", ncol=3,
               bbox_to_anchor=(1.0, 1.0 - 0.9 / fig.get_figheight()))
    fig.tight_layout(rect=(0, 0, 1, 1 - 1.3 / fig.get_figheight()))
    save(fig, outdir, name, written)


PALE = "#b8cfe6"  # a bar whose figure means less than it seems


def chart_speedup(reports, outdir, written):
    """GPU over CPU, one panel per op family, its cases sorted: a bar for the best of each
    device, markers for the same with copies and for each like-precision pair; cases whose
    figures mean less than they seem (latency-bound, cache-resident) pale and starred."""
    by_op, rows_of, reasons = {}, {}, []
    for i, (name, doc) in enumerate(reports):
        for row in doc["pairbench"]["analyses"]["speedup"]:
            if "speedup" in row:
                item = (i, row["shape"], row["speedup"], bool(row.get("apart")))
                by_op.setdefault(row["op"], []).append(item)
                rows_of[id(item)] = row
            elif row.get("gpu_missing"):
                reasons.append(f"{name}: {row['gpu_missing']}")
    title = ("Speedup, GPU over CPU per op family: the best of each device (bars) and like "
             "precision (markers), log scale\n" + "; ".join(n for n, _ in reports))
    if not by_op:
        fig, ax = plt.subplots(figsize=(9, 4))
        note(ax, "No GPU speedup to show:\n" + "\n".join(sorted(set(reasons)) or ["no paired cases"]))
        ax.set_title(title, fontsize=9)
        save(fig, outdir, "speedup", written)
        return
    fig, panels = family_panels(by_op, "GPU speedup over the CPU (x, log)", title, len(reports))
    shown = {"best of each device": Patch(color="C0"),
             "the same, latency-bound or cache-resident (*)": Patch(color=PALE)}
    for ax, items, ys in panels:
        rows = [rows_of[id(it)] for it in items]
        for key, label in SPEEDUP_SERIES[1:]:
            pts = [(r[key], y) for y, r in zip(ys, rows) if key in r]
            if pts:
                marker, color = SPEEDUP_MARKERS[key]
                shown.setdefault(label, ax.scatter(*zip(*pts), marker=marker, color=color, s=14,
                                                   zorder=3))
    finish_panels(fig, shown, outdir, "speedup", written)


def chart_reference(reports, outdir, written):
    """PyTorch beside pairbench (reports with pairbench.references.torch): per op family and
    workload, pairbench's best time over torch's; nothing where no report has a reference."""
    by_op = {}
    for i, (_, doc) in enumerate(reports):
        ref = doc["pairbench"].get("references", {}).get("torch")
        for c in ref["cases"] if ref else []:
            if c["status"] == "ok":
                by_op.setdefault(f"{c['op']} ({c['device']})", []).append(
                    (i, c["name"].split("/", 3)[3], c["ratio"], c.get("latency_bound", False)))
    if not by_op:
        return
    versions = sorted({doc["pairbench"]["references"]["torch"]["version"] for _, doc in reports
                       if "torch" in doc["pairbench"].get("references", {})})
    fig, _ = family_panels(
        by_op, "pairbench's best time / torch's (log; below 1, pairbench is faster)",
        f"PyTorch {', '.join(versions)} beside pairbench, per op family and workload\n"
        + "; ".join(n for n, _ in reports), len(reports))
    finish_panels(fig, {"pairbench / torch": Patch(color="C0"),
                        "the same, latency-bound (*: under 20 us)": Patch(color=PALE)},
                  outdir, "torch", written)


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
            if not series:
                continue
            ax.plot([p["batch"] for p in series], [p["samples_per_s"] for p in series], marker="o",
                    label=f"{dev}" + (f", {bs['model']}" if bs.get("model") else "")
                    + (f" [{i + 1}]" if len(reports) > 1 else ""))
            any_data = True
        cross = doc["pairbench"]["analyses"].get("batch_size", {}).get("crossover_batch")
        if cross:
            ax.axvline(cross, linestyle="--", color="gray",
                       label=f"crossover: the GPU ahead from batch {cross}")
    epochs = [line for _, doc in reports for line in pbreport.projection_lines(doc, energy=False)]
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


def family_speedup_lines(reports):
    """Per machine and op family, the like-precision GPU speedups as a median and range over
    the cases that stand as headline figures; an op whose every case is set apart
    (latency-bound, cache-resident, a throttled host) shows those, said so. Or why a machine has
    none."""
    out = []
    for i, (_, doc) in enumerate(reports):
        who = f"machine {i + 1}, " if len(reports) > 1 else ""
        by = {}  # op -> apart? -> precision -> speedups
        for row in doc["pairbench"]["analyses"]["speedup"]:
            for key, label in LIKE_PRECISION:
                if key in row:
                    by.setdefault(row["op"], {}).setdefault(bool(pbreport.apart_reason(row)), {}) \
                        .setdefault(label, []).append(row[key])
        for op, sides in by.items():
            series = sides.get(False) or sides[True]
            said = "; ".join(f"{label} {statistics.median(v):.1f}x ({min(v):.1f}-{max(v):.1f}x, "
                             f"{len(v)} case{'s' if len(v) > 1 else ''})" for label, v in series.items())
            apart = (" (every case set apart: latency-bound, cache-resident or a throttled host; "
                     "see each case below)" if False not in sides else "")
            out.append(f"{who}{op}, GPU over CPU at like precision: {said}{apart}")
        if not by:
            out.append(f"{who}no like-precision GPU speedup"
                       + ("" if doc["context"].get("gpu_available") else
                          f" (no GPU: {doc['context'].get('gpu_reason', '?')})"))
    return out


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
    lines += ["", "## The answer", ""]
    lines += [f"- {line}" for line in family_speedup_lines(reports)]
    for i, (_, doc) in enumerate(reports):
        epochs = pbreport.projection_lines(doc)
        if epochs:
            pr = doc["pairbench"]["analyses"]["projection"]
            lines += ["", f"One epoch of ImageNet-1k ({int(pr['images'])} images), machine {i + 1}:", ""]
            lines += [f"- {e}" for e in epochs]
            if pbreport.ratio_line(doc):
                lines += ["", pbreport.ratio_line(doc)]
            lines += ["", f"The claim: {pr['claim']}. {pbreport.sentence(pr['note'])}"]
    if "projection" in written:
        lines += ["", "![projection](projection.png)"]
    lines += ["", "## Each case"]
    def side(s):
        if not s:
            return "-"
        sps = s.get("samples_per_s")
        samples = f"{sps:.{1 if sps < 100 else 0}f} samples/s, " if sps else ""
        return f"{s['impl']} {s['dtype']} {samples}{pbreport.rate(s)}"

    # Rows whose figures mean less than they seem go to a table of their own, with why; problems
    # that ran on neither device to one line per op and reason.
    head = "| machine | op | shape | best CPU | best GPU | GPU speedup | like precision |"
    tables = {False: [], True: []}
    not_run = collections.Counter()
    for i, (_, doc) in enumerate(reports):
        for row in doc["pairbench"]["analyses"]["speedup"]:
            if not row["cpu"] and not row["gpu"]:
                not_run[(i, row["op"], pbreport.not_run_reason(row, doc))] += 1
                continue
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
    if not_run:
        lines += ["", "Not run on either device:", ""]
        lines += [f"- machine {i + 1}, {op}, {n} shape{'s' if n > 1 else ''}: {why}"
                  for (i, op, why), n in not_run.items()]
    lines += reference_table(reports)
    scaling = [(i, e) for i, (_, doc) in enumerate(reports) if (e := pbreport.scaling_lines(doc))]
    if scaling:
        lines += ["", "**Data parallelism**: each training step over several ranks against the "
                  "same step without the all-reduce, and the epoch on N devices by the ring "
                  "model (t_local + 2(N-1)/N x gradient bytes / busbw)."]
        for i, e in scaling:
            lines += ["", f"Machine {i + 1}:", ""] + [f"- {line}" for line in e]
    energy = [(i, e) for i, (_, doc) in enumerate(reports) if (e := pbreport.energy_lines(doc))]
    if energy:
        lines += ["", "**Energy**: the meters, and the mean power of the cases they metered "
                  "(each over its metered region)."]
        for i, e in energy:
            lines += ["", f"Machine {i + 1}:", ""] + [f"- {line}" for line in e]
    lines.append("")
    for name in written:
        if name != "projection":  # shown with the answer above
            lines += [f"![{name}]({name}.png)", ""]
    return "\n".join(lines)


def reference_table(reports):
    """summary.md's PyTorch section (reports with pairbench.references.torch): each op family's
    median and range of pairbench's best time over torch's, then one row per workload."""
    out = []
    for i, (_, doc) in enumerate(reports):
        ref = doc["pairbench"].get("references", {}).get("torch")
        if not ref:
            continue
        out += ["", f"**PyTorch {ref['version']} beside pairbench**, machine {i + 1}: pairbench's "
                "best time over torch's on the same workload (below 1, pairbench is faster), "
                "torch checked against float64 before it was timed.", "",
                "| op | device | median | range | workloads |", "|---|---|---|---|---|"]
        out += [f"| {op} | {dev} | {med:.2f} | {lo:.2f}-{hi:.2f} | {n} |"
                for op, dev, med, lo, hi, n in pbreport.reference_medians(doc)]
        out += ["", "| workload | pairbench best | torch | pairbench / torch |", "|---|---|---|---|"]
        for c in ref["cases"]:
            pb = f"{c['pairbench']['impl']} {1e3 * c['pairbench']['median_s']:.3f} ms"
            if c["status"] == "ok":
                layout = f" ({c['layout']})" if c.get("layout") else ""
                out.append(f"| {c['name']} | {pb} | {1e3 * c['time']['median_s']:.3f} ms{layout} "
                           f"| {c['ratio']:.2f} |")
            else:
                out.append(f"| {c['name']} | {pb} | {c['status']}: {c.get('message', '')} | - |")
    return out


def main(argv=None):
    p = pbreport.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("reports", nargs="+", metavar="REPORT")
    p.add_argument("-o", "--outdir", required=True, metavar="DIR")
    a = p.parse_args(argv)
    try:
        docs = [pbreport.load(r) for r in a.reports]
    except pbreport.ReportError as e:
        print(f"plot.py: error: {e}", file=sys.stderr)
        return 2
    if os.path.exists(a.outdir) and not os.path.isdir(a.outdir):
        print(f"plot.py: error: -o {a.outdir}: not a folder", file=sys.stderr)
        return 2
    try:
        os.makedirs(a.outdir, exist_ok=True)
    except OSError as e:
        print(f"plot.py: error: cannot create {a.outdir}: {e.strerror}", file=sys.stderr)
        return 2
    reports = [(pbreport.machine(d), d) for d in docs]
    # Drawn into a folder of its own inside DIR, and moved into DIR only once every chart and the
    # summary are made: a chart that fails leaves DIR as it was, not half this run's charts beside
    # an earlier run's summary.
    try:
        staging = tempfile.mkdtemp(prefix=".plot-", dir=a.outdir)
    except OSError as e:
        print(f"plot.py: error: cannot write in {a.outdir}: {e.strerror}", file=sys.stderr)
        return 2
    try:
        return draw(reports, staging, a.outdir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def draw(reports, staging, outdir):
    """The charts and summary.md of reports drawn in staging, then moved into outdir with no
    chart of an earlier run left beside them; 0, or 2 with one line where a chart cannot be
    drawn."""
    written = []
    # numpy's overflow warnings on extreme figures: each chart either draws or says in one line
    # why it cannot.
    warnings.simplefilter("ignore", RuntimeWarning)
    for chart in (chart_projection, chart_speedup, chart_reference, chart_parallelism,
                  chart_bandwidth, chart_batch, chart_roofline):
        try:
            chart(reports, staging, written)
        except (ArithmeticError, ValueError) as e:  # figures a valid report holds but no axis
            # can (a projection of 1e308 hours, an intensity of 5e-324 FLOP/B)
            name = chart.__name__.removeprefix("chart_")
            print(f"plot.py: error: the {name} chart cannot be drawn from these reports: {e}",
                  file=sys.stderr)
            return 2
    with open(os.path.join(staging, "summary.md"), "w", encoding="utf-8") as f:
        f.write(summary(reports, written))
    files = [f"{name}.{ext}" for name in CHARTS for ext in ("png", "svg")] + ["summary.md"]
    for f in files:  # a folder where a file goes: said before anything is moved
        dest = os.path.join(outdir, f)
        if os.path.isdir(dest):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), dest)
    # A chart this run did not draw (no PyTorch figures this time) leaves no earlier run's
    # behind it; summary.md comes last.
    for f in files:
        new, dest = os.path.join(staging, f), os.path.join(outdir, f)
        if os.path.isfile(new):
            os.replace(new, dest)
        elif os.path.isfile(dest):
            os.remove(dest)
    print(os.path.join(outdir, "summary.md"))
    return 0


if __name__ == "__main__":
    pbreport.run(main)
