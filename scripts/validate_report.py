#!/usr/bin/env python3
"""Checks a pairbench report: strict JSON (no NaN or Infinity), the schema, the rules the
schema cannot say (no two cases of one name; each case's median among its repetitions' medians,
and its GFLOP/s, GB/s and samples/s its work over that median), every figure against its
device's ceiling (context.ceilings; the peaks of older reports) and the machine probes too,
metered energy and projected dollars against the figures they come from, and the speedups,
roofline points, STREAM entries, parallelism and batch sweeps, training steps and epochs against
what they are made of. Each problem is one line: where (the path, and the name of the case or
entry it is in) and what.
Usage: validate_report.py REPORT... ; exit 0 valid, 1 invalid, 2 unreadable."""
import collections
import errno
import importlib
import json
import math
import os
import pathlib
import stat
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "reports" / "report.schema.json"


def need(module):
    """module, imported; or one line and exit 2 where this Python lacks it. The scripts' own
    modules (jsonschema, scipy, matplotlib) are in the .venv that scripts/setup makes, and a
    script run with another Python would otherwise end in a traceback."""
    try:
        return importlib.import_module(module)
    except ImportError:
        print(f"{pathlib.Path(sys.argv[0]).name}: error: this Python ({sys.executable}) has no "
              f"{module.split('.')[0]}: run it with {ROOT / '.venv/bin/python'} "
              "(scripts/setup installs it there)", file=sys.stderr)
        sys.exit(2)


def _reject_constant(name):
    raise ValueError(f"non-standard JSON constant {name}")


def _in_range(convert):
    """A JSON number's parser that refuses one beyond a double's range (1e400 would read as
    Infinity, a 400-digit integer fail the first float arithmetic on it), as serde does."""
    def parse(text):
        if not math.isfinite(float(text)):
            raise ValueError(f"number {text[:20]} is beyond a double's range")
        return convert(text)
    return parse


def _no_lone_surrogate(s):
    """s, where it is text that UTF-8 can hold: a JSON escape such as \\ud800 alone decodes to
    a lone surrogate, which no script could print."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"a string holds a lone surrogate (an unpaired \\u escape): "
                         f"{s.encode('utf-8', 'backslashreplace')[:40].decode()!r}") from None
    return s


def _checked_strings(v):
    """v, each string in it (through arrays) checked by _no_lone_surrogate."""
    if isinstance(v, str):
        return _no_lone_surrogate(v)
    if isinstance(v, list):
        for x in v:
            _checked_strings(x)
    return v


def _object(pairs):
    """A JSON object from its pairs, refusing a key given twice (json keeps the last, serde
    refuses) and strings with a lone surrogate."""
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"the key {_no_lone_surrogate(k)!r} is given twice in one object")
        out[_no_lone_surrogate(k)] = _checked_strings(v)
    return out


def load_strict(path):
    """Parses as strictly as JSON.parse or serde: NaN, Infinity and -Infinity are errors, and
    so are a number beyond a double's range, a key given twice in an object and a lone
    surrogate in a string; ValueError says which."""
    mode = os.stat(path).st_mode if os.path.exists(path) else 0
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISSOCK(mode):
        # /dev/zero would be read until memory ran out.
        raise OSError(errno.EINVAL, "a device or socket, not a file")
    if stat.S_ISFIFO(mode):
        # A pipe: what its writer gives (a process substitution, /dev/stdin), and at once
        # nothing where none writes (a named pipe would otherwise be waited on for ever).
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        os.set_blocking(fd, True)
        f = os.fdopen(fd, encoding="utf-8")
    else:
        f = open(path, encoding="utf-8")
    with f:
        try:
            return _checked_strings(json.load(
                f, parse_constant=_reject_constant, parse_float=_in_range(float),
                parse_int=_in_range(int), object_pairs_hook=_object))
        except RecursionError:
            raise ValueError("nested too deeply") from None


TIME_UNITS = ("ns", "us", "ms", "s")
USAGE = "usage: validate_report.py REPORT...  (exit 0 valid, 1 invalid, 2 unreadable)"


def brief(x):
    """x as a message names it: its repr, or where that is long, what it is."""
    if isinstance(x, dict):
        return f"an object of {len(x)} keys"
    if isinstance(x, list):
        return f"an array of {len(x)} items"
    return repr(x)[:57] + "..."


def schema_line(doc, e):
    """One short line for a schema error e in doc: the path, the name of the innermost record
    on it that has one (a case, a benchmark entry), and what is wrong, never the whole record."""
    named, node = None, doc
    for key in e.absolute_path:
        node = node[key]
        if isinstance(node, dict) and isinstance(node.get("name"), str):
            named = node["name"]
    where = "/".join(map(str, e.absolute_path)) or "(root)"
    if named:  # on one line whatever it holds (a schema error may be that it holds a newline)
        where += " (" + "".join(ch if ch.isprintable() else "?" for ch in named) + ")"
    if e.validator == "not":  # the schema's `not` only ever forbids keys
        keys = [k for s in (e.validator_value, *e.validator_value.get("anyOf", []))
                for k in s.get("required", [])]
        status = e.instance.get("status")
        if isinstance(status, str):
            return f"{where}: a case whose status is {status!r} carries no {' or '.join(keys)}"
        return f"{where}: must not carry {' or '.join(keys)}"
    message = e.message  # jsonschema's messages open with the instance's repr
    if len(repr(e.instance)) > 60 and message.startswith(repr(e.instance)):
        message = brief(e.instance) + message[len(repr(e.instance)):]
    return f"{where}: {message if len(message) <= 200 else message[:197] + '...'}"


def schema_problems(doc, schema):
    """Every way doc fails schema, one short line each (schema_line)."""
    jsonschema = need("jsonschema")  # here: load_strict and the other checks work without it

    # A `not` that forbids keys fails on any non-object too: its type error says that already.
    return [schema_line(doc, e) for e in jsonschema.Draft202012Validator(schema).iter_errors(doc)
            if e.validator != "not" or isinstance(e.instance, dict)]


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


def bound(context, device, key):
    """The check's bound for a device's ceiling `key` (a dtype, "memory" or "host_link") and
    where it comes from: context.ceilings (reports since the ceilings came in), else the peaks
    older reports carry (the CPU's fp32 at twice its nominal clock, for turbo)."""
    ceil = context.get("ceilings", {}).get(device, {}).get(key)
    if isinstance(ceil, dict):  # else none, or a string saying why none
        return ceil.get("bound"), ceil.get("bound_source", "context.ceilings")
    legacy = {("cpu", "fp32"): ("cpu_peak_fp32_gflops", 2.0, "twice the fp32 peak (turbo)"),
              ("gpu", "fp32"): ("gpu_peak_fp32_gflops", 1.0, "the fp32 peak"),
              ("gpu", "memory"): ("gpu_peak_bandwidth_gbs", 1.0, "the memory's peak")}
    if (device, key) in legacy and "ceilings" not in context:
        name, factor, why = legacy[(device, key)]
        peak = context.get(name)
        if isinstance(peak, (int, float)) and peak > 0:
            return factor * peak, f"{why}, context.{name}"
    return None, None


def effective_flops(c):
    """A convolution computed with fewer multiplications than its direct form counts (Winograd,
    FFT), as its impl_detail names the algorithm: its GFLOP/s is an effective rate, held to no
    compute ceiling (reports/checks.cpp); the label alone is not taken for it."""
    detail = c.get("impl_detail", "").lower()
    return c.get("op") == "conv" and ("wino" in detail or "fft" in detail)


def impossible_figures(doc):
    """Every figure of the report above what its device can do, as one line each: measured
    cases (not those the report itself marked above_ceiling: they are errors with no time), the
    machine probes, the STREAM figures of memory_bandwidth (write-allocate traffic included),
    and any roofline point or case above 100% of its attainable or its peak (pct_peak: a case
    that beat the peak reads 100 with beat_peak_by)."""
    ctx, out = doc["context"], []
    for c in doc["pairbench"]["cases"]:
        if c.get("status") != "ok":
            continue
        if c.get("pct_peak", 0) > 100:
            out.append(f"{c['name']}: at {c['pct_peak']:.0f}% of its device's peak: no figure may "
                       f"stand above its ceiling")
        if c.get("metric") == "GB/s":
            host_link = c.get("role") == "transfer" and c["shape"].get("dir") != "d2d"
            if c.get("cache_resident") and not host_link:  # no cache holds a copy over the link
                continue
            key = "host_link" if host_link else "memory"
            figure, unit = c.get("gbs", 0), "GB/s"
        elif c.get("flops", 0) > 0 and not effective_flops(c):
            key, figure, unit = c["dtype"], c.get("gflops", 0), "GFLOP/s"
        else:
            continue
        # Over several ranks a figure is every rank's together: one rank's share is what one
        # device is held to (as the report's own check holds it).
        figure /= float(c["shape"].get("ranks", "1"))
        limit, why = bound(ctx, c["device"], key)
        if limit and figure > limit:
            out.append(f"{c['name']}: {figure:.1f} {unit} is above the {c['device']}'s {key} "
                       f"ceiling {limit:.1f} ({why})")
    # The machine probes weigh the CPU cases' times in compare.py: an impossible one would excuse
    # any slowdown there.
    for p in ctx.get("machine_probes", []):
        for field, key, unit in (("compute_gflops", "fp32", "GFLOP/s"), ("copy_gbs", "memory",
                                                                         "GB/s")):
            limit, why = bound(ctx, "cpu", key)
            if limit and p[field] > limit:
                out.append(f"machine probe {p['when']!r}: {field} {p[field]:.1f} {unit} is above "
                           f"the cpu's {key} ceiling {limit:.1f} ({why})")
    analyses = doc["pairbench"]["analyses"]
    in_cache = {c["name"] for c in doc["pairbench"]["cases"] if c.get("cache_resident")}
    for dev, d in analyses.get("memory_bandwidth", {}).items():
        if dev not in ("cpu", "gpu"):
            continue
        limit, why = bound(ctx, dev, "memory")
        for k in d.get("stream", []) if limit else []:
            if k.get("name") in in_cache:  # a cache is faster than memory (as for the cases)
                continue
            for field, label in (("gbs", "STREAM"), ("gbs_with_write_allocate",
                                                     "STREAM with write-allocate traffic")):
                if k.get(field, 0) > limit:
                    out.append(f"memory_bandwidth/{dev}/{k['kernel']}: {label} {k[field]:.1f} "
                               f"GB/s is above the {dev}'s memory ceiling {limit:.1f} ({why})")
    for dev, r in analyses.get("roofline", {}).items():
        for p in r.get("points", []):
            if p.get("pct_of_attainable", 0) > 100:
                out.append(f"roofline/{dev}: {p['name']} at {p['pct_of_attainable']:.0f}% of its "
                           f"attainable: no figure may stand above its ceiling")
    return out


UNIT_S = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}


def time_problems(name, t, entries):
    """What no set of positive iteration times can give, as one line each: a minimum above the
    median or the mean, a median above twice the mean (half the times are at least the median),
    a standard deviation above mean x sqrt(iterations) (all the time in one iteration), a cv
    other than stddev / mean; and iterations or a mean other than the case's Google Benchmark
    entries' (each repetition's iterations and mean time), where it has any."""
    out, slack = [], 1 + 1e-9
    median, low, mean, sd, n = (t["median_s"], t["min_s"], t["mean_s"], t["stddev_s"],
                                t["iterations"])
    if low > median * slack or low > mean * slack:
        out.append(f"{name}: min_s {low:.6g} s is above its median {median:.6g} s or mean "
                   f"{mean:.6g} s")
    if median > 2 * mean * slack:
        out.append(f"{name}: median {median:.6g} s is above twice its mean {mean:.6g} s")
    if sd > mean * math.sqrt(n) * slack:
        out.append(f"{name}: stddev_s {sd:.6g} s is more than {n} positive iterations of mean "
                   f"{mean:.6g} s can spread")
    if not math.isclose(t["cv"], sd / mean, rel_tol=1e-6, abs_tol=1e-12):
        out.append(f"{name}: cv {t['cv']:.6g} is not stddev_s / mean_s ({sd / mean:.6g})")
    if entries:
        count = sum(b["iterations"] for b in entries)
        total = sum(b["real_time"] * UNIT_S[b["time_unit"]] * b["iterations"] for b in entries)
        if count != n or not math.isclose(total / max(count, 1), mean, rel_tol=1e-4):
            out.append(f"{name}: {n} iterations at a mean of {mean:.6g} s, where its Google "
                       f"Benchmark entries say {count} at {total / max(count, 1):.6g} s")
    return out


def case_problems(doc):
    """What the schema cannot say of the cases, one line each: a name given twice, or not its
    op/device/impl; a median time outside its repetitions' medians (the pooled median never
    is); a figure more than 1% from its work over its median time (GFLOP/s from flops, GB/s from
    min_bytes, samples/s from items), which the ceilings below then hold as measured; more ranks
    than the run had (each rank's share of a figure is what the ceilings hold); time statistics
    that no timed iterations can give (time_problems); a verified case's error above its
    tolerance."""
    out, seen = [], set()
    ranks = doc["context"].get("ranks", {}).get("size", 1)
    runs = {}  # run_name -> its iteration entries that carry a time, as ci_tool_problems checks
    for b in doc["benchmarks"]:
        if (b["run_type"] == "iteration" and not b.get("error_occurred")
                and not isinstance(b.get("real_time"), bool)
                and isinstance(b.get("real_time"), (int, float))
                and b.get("time_unit") in TIME_UNITS and type(b["iterations"]) is int):
            runs.setdefault(b["run_name"], []).append(b)
    for c in doc["pairbench"]["cases"]:
        name = c["name"]
        if name in seen:
            out.append(f"{name}: a second case of this name")
        seen.add(name)
        if not name.startswith(f"{c['op']}/{c['device']}/{c['impl']}/"):
            out.append(f"{name}: its name is not its op/device/impl "
                       f"({c['op']}/{c['device']}/{c['impl']})")
        if c["status"] != "ok":
            continue
        if c.get("max_error", 0) > c.get("tolerance", math.inf):
            out.append(f"{name}: verified with an error of {c['max_error']:.6g}, above its "
                       f"tolerance {c['tolerance']:.6g}")
        if int(c["shape"].get("ranks", "1")) > ranks:
            out.append(f"{name}: ran over {c['shape']['ranks']} ranks, more than the run's "
                       f"{ranks} (context.ranks)")
        t = c["time"]
        noisy_cv = doc["context"].get("noisy_cv_threshold")
        if ("noisy" in c and "robust_cv" in t and noisy_cv is not None
                and c["noisy"] != (t["robust_cv"] > noisy_cv)):
            # compare.py excuses a noisy case's difference within twice its robust cv
            out.append(f"{name}: noisy is {str(c['noisy']).lower()} with a robust cv of "
                       f"{t['robust_cv']:.6g} against the run's threshold {noisy_cv:.6g}")
        median, reps = t["median_s"], t["repetition_medians_s"]
        if len(reps) != t["repetitions"]:
            out.append(f"{name}: {len(reps)} repetition medians for {t['repetitions']} repetitions")
        elif not min(reps) * (1 - 1e-9) <= median <= max(reps) * (1 + 1e-9):
            out.append(f"{name}: median {median:.6g} s is outside its repetitions' medians "
                       f"({min(reps):.6g}-{max(reps):.6g} s)")
        for figure, work, unit in (("gflops", "flops", 1e9), ("gbs", "min_bytes", 1e9),
                                   ("samples_per_s", "items", 1.0)):
            if figure in c and work in c:
                expected = c[work] / median / unit
                if not math.isclose(c[figure], expected, rel_tol=0.01):
                    out.append(f"{name}: {figure} {c[figure]:.4g} is not {work} / median time "
                               f"({c[work]:.4g} / {median:.4g} s = {expected:.4g})")
        out += time_problems(name, t, runs.get(f"{name}/manual_time", []))
    return out


def problems(doc):
    """Every way doc fails to be a pairbench report, as one line each. The checks after the
    schema's assume its types: they run only on a report the schema passes."""
    out = schema_problems(doc, json.loads(SCHEMA.read_text()))
    if out:
        return out
    out += ci_tool_problems(doc) + case_problems(doc)
    names = {c["name"] for c in doc["pairbench"]["cases"]}
    for lib, ref in doc["pairbench"].get("references", {}).items():
        names |= {c["name"] for c in ref["cases"]}
        for c in ref["cases"]:
            if c["status"] == "ok" and c.get("max_error", 0) > c.get("tolerance", math.inf):
                out.append(f"references/{lib}: {c['name']}: ok with an error of "
                           f"{c['max_error']:.6g}, above its tolerance {c['tolerance']:.6g}")
            if c["status"] == "ok" and c["time"]["min_s"] > c["time"]["median_s"]:
                out.append(f"references/{lib}: {c['name']}: its fastest run "
                           f"{c['time']['min_s']:.6g} s is slower than its median "
                           f"{c['time']['median_s']:.6g} s")
    for b in doc["benchmarks"]:
        if b["run_name"].removesuffix("/manual_time") not in names:
            out.append(f"benchmark {b['name']} has no case record")
        if b.get("error_occurred") and b.get("real_time", 0) != 0:
            out.append(f"errored benchmark {b['name']} carries a time")
    return out + impossible_figures(doc) + energy_problems(doc) + analysis_problems(doc)


def analysis_problems(doc):
    """Analyses that cannot be what they say, as one line each: a speedup side that names no
    verified case of its op on its device, or gives a time or a rate other than that case's; a
    speedup other than its CPU side's time over its GPU side's; roofline points, STREAM entries
    and sweeps other than their cases' (roofline_problems, stream_problems, sweep_problems);
    training steps no case gave (step_problems); and
    an epoch other than the images over the samples/s it names (the charts read these figures,
    not the cases)."""
    out = []
    verified = {c["name"]: c for c in doc["pairbench"]["cases"] if c["status"] == "ok"}
    an = doc["pairbench"]["analyses"]
    for row in an.get("speedup", []):
        where = f"speedup/{row['op']}/{row['shape']}"
        sides = {}
        for dev in ("cpu", "gpu"):
            side = row.get(dev)
            if not side:
                continue
            case = verified.get(side["name"])
            if case is None:
                out.append(f"{where}: its {dev} side {side['name']} is no verified case")
            elif case["op"] != row["op"] or case["device"] != dev:
                out.append(f"{where}: its {dev} side {side['name']} is a {case['device']} "
                           f"{case['op']} case")
            elif not math.isclose(side["time_s"], case["time"]["median_s"], rel_tol=1e-6):
                out.append(f"{where}: its {dev} side's time {side['time_s']:.6g} s is not its "
                           f"case's median ({case['time']['median_s']:.6g} s)")
            elif any(f in side and f in case and not math.isclose(side[f], case[f], rel_tol=1e-6)
                     for f in ("gflops", "gbs")):
                out.append(f"{where}: its {dev} side's rate is not its case's ("
                           + ", ".join(f"{f} {side[f]:.6g} against {case[f]:.6g}"
                                       for f in ("gflops", "gbs") if f in side and f in case)
                           + ")")
            elif ("gbs" if side.get("metric") == "GB/s" else "gflops") not in side:
                # the figure each script gives a side in (pbreport.rate)
                out.append(f"{where}: its {dev} side, read in {side.get('metric')}, gives no "
                           + ("gbs" if side.get("metric") == "GB/s" else "gflops"))
            else:
                sides[dev] = side["time_s"]
        if "speedup" in row and len(sides) == 2:
            expected = sides["cpu"] / sides["gpu"]
            if not math.isclose(row["speedup"], expected, rel_tol=1e-6):
                out.append(f"{where}: speedup {row['speedup']:.6g} is not the CPU's time over "
                           f"the GPU's ({expected:.6g})")
    out += (roofline_problems(doc, verified) + stream_problems(doc, verified)
            + sweep_problems(doc, verified) + step_problems(doc, verified))
    pr = an.get("projection", {})
    for dev, d in pr.get("devices", {}).items():
        for where, p in ((dev, d), (f"{dev}/end_to_end", d.get("end_to_end"))):
            if not p:
                continue
            expected = pr["images"] / p["samples_per_s"]
            if not math.isclose(p["epoch_s"], expected, rel_tol=1e-6) or not math.isclose(
                    p["epoch_h"], p["epoch_s"] / 3600, rel_tol=1e-6):
                out.append(f"projection/{where}: an epoch of {p['epoch_s']:.6g} s "
                           f"({p['epoch_h']:.6g} h) is not {pr['images']:.0f} images at "
                           f"{p['samples_per_s']:.6g} samples/s ({expected:.6g} s)")
            if "training_h" in p and "epochs" in pr and not math.isclose(
                    p["training_h"], pr["epochs"] * p["epoch_h"], rel_tol=1e-6):
                out.append(f"projection/{where}: training_h {p['training_h']:.6g} is not "
                           f"{pr['epochs']} epochs of {p['epoch_h']:.6g} h")
    return out


def number(v, otherwise=math.nan):
    """v as a float (a shape's value is text), or `otherwise` where it is none."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return otherwise


def roofline_figures(case, point, memory_gbs):
    """The figures a roofline point of `case` has (reports/analyses.cpp, roofline): one rank's
    share of its GFLOP/s, its intensity (flops / min_bytes), and, where the point has a ceiling,
    its percentage of the attainable (the ceiling, or intensity x the memory's ceiling where that
    is lower and the case is not cache-resident; at most 100)."""
    gflops = case.get("gflops", 0) / float(case["shape"].get("ranks", "1"))
    moved = case.get("min_bytes", 0)
    intensity = case.get("flops", 0) / moved if moved > 0 else math.inf
    out = {"gflops": gflops, "intensity": intensity}
    ceiling = point.get("ceiling_gflops")
    if ceiling:  # a positive number or null (the schema)
        attainable = (ceiling if point.get("cache_resident") or not memory_gbs
                      else min(ceiling, intensity * memory_gbs))
        if attainable > 0:
            out["pct_of_attainable"] = min(100.0, 100.0 * gflops / attainable)
    return out


def stream_figures(case, entry, best_gbs):
    """The figures a memory_bandwidth STREAM entry of `case` has (reports/analyses.cpp,
    memory_bandwidth): its case's GB/s, its percentage of the best kernel's, and its GB/s with the
    write-allocate traffic it counts."""
    out = {"gbs": case.get("gbs", 0), "gbs_with_write_allocate": (
        case.get("min_bytes", 0) + entry["write_allocate_bytes"]) / case["time"]["median_s"] / 1e9}
    if best_gbs > 0:
        out["pct_of_best"] = 100 * out["gbs"] / best_gbs
    return out


def mismatched(figures, record):
    """The figures that record gives other than figures does (within 1e-6), as 'key X, where its
    case gives Y'."""
    return ", ".join(f"{k} {record[k]:.6g}, where its case gives {v:.6g}"
                     for k, v in figures.items()
                     if k in record and not math.isclose(record[k], v, rel_tol=1e-6))


def roofline_problems(doc, verified):
    """Roofline points that are not their cases', one line each: a point that names no verified
    case of its device, or whose figures are not the ones roofline_figures gives (a percentage
    above 100 is impossible_figures' to say)."""
    out = []
    for dev, r in doc["pairbench"]["analyses"].get("roofline", {}).items():
        for p in r.get("points", []):
            where, case = f"roofline/{dev}: {p['name']}", verified.get(p["name"])
            if case is None or case["device"] != dev:
                out.append(f"{where}: no verified {dev} case of this name")
                continue
            figures = roofline_figures(case, p, r.get("measured_gbs"))
            if p.get("pct_of_attainable", 0) > 100:
                figures.pop("pct_of_attainable", None)
            wrong = mismatched(figures, p)
            if wrong:
                out.append(f"{where}: {wrong}")
    return out


def stream_problems(doc, verified):
    """memory_bandwidth's STREAM entries that are not their cases', one line each: an entry that
    names no verified STREAM case of its device and kernel, or whose figures are not the ones
    stream_figures gives."""
    out = []
    for dev, d in doc["pairbench"]["analyses"].get("memory_bandwidth", {}).items():
        if dev not in ("cpu", "gpu"):  # the analysis's other keys (its GPU SM scaling)
            continue
        entries = d.get("stream", [])
        best = max((verified[k["name"]].get("gbs", 0) for k in entries if k["name"] in verified),
                   default=0)
        for k in entries:
            where, case = f"memory_bandwidth/{dev}/{k['kernel']}", verified.get(k["name"])
            if (case is None or case["device"] != dev or case["op"] != "stream"
                    or case["shape"].get("kernel") != k["kernel"]):
                out.append(f"{where}: {k['name']} is no verified {dev} STREAM {k['kernel']} case")
                continue
            wrong = mismatched(stream_figures(case, k, best), k)
            if wrong:
                out.append(f"{where}: {wrong}")
    return out


def throughput(case):
    """A case's figure in its metric (reports/analyses.cpp, throughput)."""
    return case.get({"GB/s": "gbs", "samples/s": "samples_per_s"}.get(case.get("metric"),
                                                                       "gflops"), 0)


def sweep_index(cases):
    """cases by what a parallelism or batch sweep names each point's case with (reports/
    analyses.cpp, sweeps): (device, op, impl, the shape without the sweep's axis, the axis,
    its value)."""
    index = {}
    for c in cases:
        for axis, v in c["shape"].items():
            rest = ",".join(f"{k}={x}" for k, x in c["shape"].items() if k != axis)
            index[(c["device"], c["op"], c["impl"], rest, axis, number(v, v))] = c
    return index


def sweep_cases(index, dev, sweep):
    """The case of each point of a sweep on device dev, None where sweep_index has none."""
    return [index.get((dev, sweep["op"], sweep["impl"], sweep["shape"], sweep["unit"],
                       float(p[sweep["unit"]]))) for p in sweep["points"]]


def sweep_figures(sweep, cases):
    """The figures each point of a sweep has, from its case: the case's throughput, the speedup
    over the first point's, and the efficiency (that speedup over the growth of the axis)."""
    axis, points = sweep["unit"], sweep["points"]
    base, base_at = throughput(cases[0]), points[0][axis]
    return [{"throughput": throughput(c)} if base <= 0 else
            {"throughput": throughput(c), "speedup": throughput(c) / base,
             "efficiency": throughput(c) / base * base_at / p[axis]}
            for p, c in zip(points, cases)]


def sweep_problems(doc, verified):
    """The parallelism and batch analyses' points that are not their cases', one line each: a
    point with no verified case of its op, device, implementation and shape at its threads, SMs
    or batch, or whose figures are not the ones sweep_figures gives."""
    out, index = [], sweep_index(verified.values())
    an = doc["pairbench"]["analyses"]
    for analysis in ("parallelism", "batch"):
        for dev in ("cpu", "gpu"):
            for i, e in enumerate(an.get(analysis, {}).get(dev, [])):
                where = f"{analysis}/{dev}/{i} ({e['op']}/{e['impl']}/{e['shape']})"
                axis = e["unit"]
                cases = sweep_cases(index, dev, e)
                if None in cases:
                    missing = e["points"][cases.index(None)][axis]
                    out.append(f"{where}: no verified case at {axis}={missing:g}")
                    continue
                for p, figures in zip(e["points"], sweep_figures(e, cases)):
                    wrong = mismatched(figures, p)
                    if wrong:
                        out.append(f"{where}: at {axis}={p[axis]:g}: {wrong}")
    return out


def step_problems(doc, verified):
    """Training steps' samples/s that no verified case gave, one line each: the projection's
    epoch per device (and end to end) and each entry of the batch_size series come from a
    one-device training step of their device, model, implementation, dtype and batch
    (reports/analyses.cpp); each data-parallel step of the scaling analysis names its case, over
    its ranks, and gives its median as step_s and its samples/s."""
    out, steps = [], collections.defaultdict(list)
    for c in verified.values():
        if c.get("role") == "training" and c["shape"].get("ranks", "1") == "1":
            key = (c["device"], c["shape"].get("model"), c["impl"],
                   number(c["shape"].get("batch")))
            steps[key].append((c["dtype"], c.get("samples_per_s", 0)))
    an = doc["pairbench"]["analyses"]
    entries = []  # (where, device, entry)
    for dev, d in an.get("projection", {}).get("devices", {}).items():
        entries += [(f"projection/{dev}", dev, d)]
        if d.get("end_to_end"):
            entries += [(f"projection/{dev}/end_to_end", dev, d["end_to_end"])]
    bs = an.get("batch_size", {})
    for model, series in [(None, bs)] + sorted(bs.get("models", {}).items()):
        for dev, points in series.get("devices", {}).items():
            entries += [(f"batch_size{'/models/' + model if model else ''}/{dev}/{i}", dev, p)
                        for i, p in enumerate(points)]
    for where, dev, e in entries:
        key = (dev, e.get("model"), e.get("impl"), number(e["batch"]))
        dtype = e.get("dtype")  # reports before the dtypes came in give none
        if not any(math.isclose(e["samples_per_s"], x, rel_tol=1e-6)
                   for t, x in steps[key] if dtype in (None, t)):
            out.append(f"{where}: {e['samples_per_s']:.6g} samples/s, which no verified "
                       f"{dev} training step of {e.get('model')}, {e.get('impl')}"
                       f"{'' if dtype is None else f', {dtype}'} at batch {e['batch']} gave")
    for i, st in enumerate(an.get("scaling", {}).get("steps", [])):
        case = verified.get(st["name"])
        if case is None or case["shape"].get("ranks", "1") != str(st["ranks"]):
            out.append(f"scaling/steps/{i}: {st['name']} is no verified case over "
                       f"{st['ranks']} ranks")
            continue
        wrong = mismatched({"step_s": case["time"]["median_s"],
                            "samples_per_s": case.get("samples_per_s", 0)}, st)
        if wrong:
            out.append(f"scaling/steps/{i} ({st['name']}): {wrong}")
    return out


def energy_problems(doc):
    """Energy and dollars that cannot be, as one line each: a case's metered mean power that is
    not a positive finite figure, joules per iteration more than 1% from mean power x metered
    time / iterations, and a projection's epoch_usd or training_usd other than usd_per_hour x
    the hours (within 1e-6)."""
    out = []
    for c in doc["pairbench"]["cases"]:
        e = c.get("energy", {})
        if e.get("status") != "ok":
            continue
        power = e["mean_power_w"]
        if not (math.isfinite(power) and power > 0):
            out.append(f"{c['name']}: energy: mean power {power} W is not a positive finite figure")
            continue
        expected = power * e["region_s"] / e["iterations"]
        if not math.isclose(e["joules_per_iter"], expected, rel_tol=0.01):
            out.append(f"{c['name']}: energy: {e['joules_per_iter']:.4g} J per iteration is not "
                       f"mean power x metered time / iterations ({power:.4g} W x "
                       f"{e['region_s']:.4g} s / {e['iterations']} = {expected:.4g} J)")
    for dev, d in doc["pairbench"]["analyses"].get("projection", {}).get("devices", {}).items():
        for where, p in ((dev, d), (f"{dev}/end_to_end", d.get("end_to_end", {}))):
            for usd, hours in (("epoch_usd", "epoch_h"), ("training_usd", "training_h")):
                if usd in p and not math.isclose(p[usd], p["usd_per_hour"] * p[hours],
                                                 rel_tol=1e-6):
                    out.append(f"projection/{where}: {usd} {p[usd]:.6g} is not usd_per_hour x "
                               f"{hours} ({p['usd_per_hour']:.6g} x {p[hours]:.6g} = "
                               f"{p['usd_per_hour'] * p[hours]:.6g})")
    return out


def main(argv):
    if "-h" in argv[1:] or "--help" in argv[1:]:
        print(USAGE)
        return 0
    flag = next((a for a in argv[1:] if a.startswith("-")), None)
    if flag or len(argv) < 2:
        print(f"validate_report.py: error: unknown option {flag} (see --help)" if flag else USAGE,
              file=sys.stderr)
        return 2
    status = 0
    for path in argv[1:]:  # each checked, the worst status returned
        try:
            doc = load_strict(path)
        except (OSError, ValueError) as e:
            print(f"{path}: not a readable JSON report: {e}", file=sys.stderr)
            status = 2
            continue
        found = problems(doc)
        for p in found:
            print(f"{path}: {p}", file=sys.stderr)
        status = max(status, 1 if found else 0)
    return status


if __name__ == "__main__":
    import pbreport  # its run(): an output that cannot be written is one line and exit 2
    pbreport.run(lambda: main(sys.argv))
