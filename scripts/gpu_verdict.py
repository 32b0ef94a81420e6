#!/usr/bin/env python3
"""The one-screen verdict of scripts/gpu-check: gpu_verdict.py REPORT [--tests-failed N]

Prints the GPU as the probe saw it, how many GPU cases verified, each GPU case that did not
(with its message), each figure above the GPU's ceilings (context.ceilings), what the cuBLAS
cases actually ran (math notes), the GPU's speedups over the CPU at like precision, each
convolution where im2col + cuBLAS beat cuDNN's choice (with cuDNN's algorithm and its own
search's time for it), what copying the batch added to each end-to-end step against the copy's
own time, the epoch projection per device, a warning when the machine changed
speed under the run (the speedups move with it), and a last line `verdict: OK` or
`verdict: FAILED (...)`.
Exit codes: 0 OK; 1 FAILED; 2 bad input; 3 the report has no usable GPU."""
import re
import sys

import pbreport


def im2col_beat_cudnn(gpu_cases):
    """One line for each convolution (shape, pass, dtype) where im2col + cuBLAS ran faster than
    cuDNN's choice: both times, the algorithm cuDNN ran and, where the case's detail has it, the
    time cuDNN's own search (Find) measured for it. Set side by side, a Find time far below the
    case's says the case timed something Find did not (launch gaps, the workspace, the data)."""
    pairs = {}
    for c in gpu_cases:
        if c["op"] == "conv" and c["status"] == "ok" and c["impl"] in ("cudnn", "im2col"):
            pairs.setdefault(c["name"].split("/", 3)[3], {})[c["impl"]] = c
    lines = []
    for shape, pair in sorted(pairs.items()):
        if len(pair) < 2 or pair["im2col"]["time"]["median_s"] >= pair["cudnn"]["time"]["median_s"]:
            continue
        detail = pair["cudnn"].get("impl_detail", "")
        algo = detail.split(": ", 1)[1].split(",")[0] if ": " in detail else "?"
        found = re.search(r"Find: \S+ ([0-9]+(?:\.[0-9]+)?) ms", detail)
        lines.append(f"  im2col beat cuDNN on {shape}: "
                     f"{pair['im2col']['time']['median_s'] * 1e6:.1f} vs "
                     f"{pair['cudnn']['time']['median_s'] * 1e6:.1f} us (cuDNN ran {algo}"
                     + (f"; its Find timed it at {float(found.group(1)) * 1e3:.1f} us" if found
                        else "") + ")")
    return lines


def copy_in_the_step(gpu_cases):
    """One line for each end-to-end step (an _h2d case beside its plain twin): what copying the
    batch added to the step, against what the copy alone takes at the run's best pinned
    host-to-device bandwidth (the transfer cases)."""
    best = max((c["gbs"] for c in gpu_cases if c["status"] == "ok" and c["op"] == "transfer"
                and "dir=h2d,host=pinned" in c["name"]), default=0.0)
    by_name = {c["name"]: c for c in gpu_cases if c["status"] == "ok"}
    lines = []
    for c in gpu_cases:
        if c["op"] != "train" or c["status"] != "ok" or not c["impl"].endswith("_h2d"):
            continue
        plain = by_name.get(c["name"].replace(f"/{c['impl']}/", f"/{c['impl'][:-4]}/"))
        copied = re.search(r"batch \((\d+) B\) copied", c.get("impl_detail", ""))
        if not plain or not copied:
            continue
        added = (c["time"]["median_s"] - plain["time"]["median_s"]) * 1e6
        nbytes = int(copied.group(1))
        alone = f"; alone at {best:.1f} GB/s: {nbytes / best / 1e3:.1f} us" if best else ""
        lines.append(f"  copy in the step: {c['impl']} {c['name'].split('/', 3)[3]}: "
                     f"{added:+.1f} us for {nbytes / 1e6:.2f} MB{alone}")
    return lines


def verdict(doc, tests_failed=0):
    """(lines, exit code) for a report."""
    ctx = doc["context"]
    if not ctx.get("gpu_available"):
        return [f"no usable GPU: {ctx.get('gpu_reason', '?')}", "verdict: NOT CHECKED (no GPU)"], 3
    lines = [f"GPU: {ctx['gpu_name']}, compute capability {ctx['gpu_compute_capability']}, "
             f"{ctx['gpu_sms']} SMs, {ctx['gpu_memory_bytes'] / 2**30:.0f} GiB; CUDA runtime "
             f"{ctx['cuda_runtime_version']}, driver {ctx['cuda_driver_version']}, cuBLAS "
             f"{ctx['cublas_version']}"]
    gpu = [c for c in doc["pairbench"]["cases"] if c["device"] == "gpu"]
    ok = [c for c in gpu if c["status"] == "ok"]
    bad = [c for c in gpu if c["status"] == "error"]
    skipped = [c for c in gpu if c["status"] == "skipped"]
    lines.append(f"GPU cases: {len(ok)} verified and timed, {len(bad)} failed, "
                 f"{len(skipped)} skipped, of {len(gpu)}")
    for c in bad + skipped:
        lines.append(f"  {c['status']}: {c['name']}: {c.get('message', '')}"[:200])
    notes = sorted({c["impl_detail"] for c in gpu if c.get("impl_detail")})
    for n in notes:
        lines.append(f"  note: {n}")
    for row in doc["pairbench"]["analyses"]["speedup"]:
        like = ", ".join(f"{k.removeprefix('speedup_')} {row[k]:.1f}x" for k in
                         ("speedup_fp32", "speedup_bf16", "speedup_fp16",
                          "speedup_gpu_tf32_vs_cpu_fp32") if k in row)
        if like:
            lines.append(f"  speedup {row['op']} {row['shape']}: {like}")
    lines += im2col_beat_cudnn(gpu) + copy_in_the_step(gpu)
    for line in pbreport.projection_lines(doc):
        lines.append(f"  one ImageNet-1k epoch, {line}")
    if pbreport.drift_line(doc):  # a shared or throttled host: right answers, unsteady times
        lines.append(f"warning: {pbreport.drift_line(doc)}")
    impossible = [c for c in gpu if "above_ceiling" in c]
    for c in impossible:
        lines.append(f"  impossible: {c['name']}: {c['above_ceiling']['value']:.1f} above the "
                     f"{c['above_ceiling']['ceiling']} ceiling {c['above_ceiling']['bound']:.1f}")
    problems = []
    if impossible:
        problems.append(f"{len(impossible)} GPU figure(s) above the GPU's ceilings")
    if bad:
        problems.append(f"{len(bad)} GPU case(s) failed")
    if skipped:
        problems.append(f"{len(skipped)} GPU case(s) skipped")
    if not ok:
        problems.append("no GPU case ran")
    if tests_failed:
        problems.append(f"{tests_failed} GPU test program(s) failed")
    lines.append("verdict: OK" if not problems else f"verdict: FAILED ({'; '.join(problems)})")
    return lines, 0 if not problems else 1


def main(argv=None):
    p = pbreport.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("report")
    p.add_argument("--tests-failed", type=int, default=0, metavar="N")
    p.add_argument("--tests-log", help="where the GPU tests' output is (named in the verdict)")
    a = p.parse_args(argv)
    if a.tests_failed < 0:
        p.error("--tests-failed must be a count of programs, 0 or more")
    try:
        doc = pbreport.load(a.report)
    except pbreport.ReportError as e:
        print(f"gpu_verdict.py: error: {e}", file=sys.stderr)
        return 2
    lines, code = verdict(doc, a.tests_failed)
    if a.tests_failed and a.tests_log:
        lines.insert(-1, f"GPU tests: {a.tests_failed} program(s) failed; "
                         f"see {pbreport.printable(a.tests_log, 300)}")
    print("\n".join(f"gpu-check: {line}" for line in lines))
    return code


if __name__ == "__main__":
    pbreport.run(main)
