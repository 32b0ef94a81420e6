"""A real quick-suite report: strict JSON, valid against the schema, readable by Google
Benchmark's own compare.py (Debian's libbenchmark-tools); the committed samples valid as they
are; metered energy and projected dollars held to the figures they come from, and malformed
energy records refused by the schema."""
import copy
import json
import pathlib
import subprocess
import sys

import pytest

import validate_report
from conftest import H100_SAMPLE, ROOT, with_energy

COMPARE = "/usr/share/benchmark/compare.py"


def test_quick_report_is_strict_json_and_valid(quick_reports):
    for path in quick_reports:
        text = path.read_text()
        for bad in ("NaN", "Infinity"):
            assert bad not in text
        doc = validate_report.load_strict(path)
        assert validate_report.problems(doc) == []
        ok = [c for c in doc["pairbench"]["cases"] if c["status"] == "ok"]
        assert ok and all(c["verified"] for c in ok)
        assert doc["pairbench"]["analyses"]["speedup"]
        assert doc["context"]["openblas_core"]


def test_compare_py_reads_two_reports(quick_reports):
    r = subprocess.run([sys.executable, COMPARE, "benchmarks", str(quick_reports[0]), str(quick_reports[1])],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "gemm/cpu/openblas" in r.stdout


def test_validator_rejects_nan_and_non_reports(tmp_path):
    nan = tmp_path / "nan.json"
    nan.write_text('{"context": {}, "benchmarks": [{"real_time": NaN}]}')
    with pytest.raises(ValueError):
        validate_report.load_strict(nan)
    assert validate_report.problems({"benchmarks": []})
    assert validate_report.main(["v", str(nan)]) == 2


OLD_H100 = pathlib.Path(__file__).resolve().parent / "data" / "quick-h100-before-ceilings.json"


def test_validator_names_the_impossible_figures_of_the_old_h100_sample(capsys):
    # The H100 sample as committed before the ceilings: GPU STREAM "with write-allocate
    # traffic" above the HBM3's 3,352 GB/s, and roofline points above 100% of a ceiling taken
    # from the suite's own best GEMM.
    assert validate_report.main(["v", str(OLD_H100)]) == 1
    err = capsys.readouterr().err
    assert ("memory_bandwidth/gpu/copy: STREAM with write-allocate traffic 4026.5 GB/s is above "
            "the gpu's memory ceiling 3352.3") in err
    assert ("roofline/gpu: conv/gpu/cudnn/dir=bwd_data,batch=8,c=256,h=14,w=14,k=256,r=3,"
            "stride=1,pad=1,dtype=fp32 at 128% of its attainable") in err
    assert err.count("roofline/cpu: ") == 30 and err.count("roofline/gpu: ") == 4


def test_a_quick_run_holds_every_figure_under_a_named_ceiling(quick_reports):
    doc = validate_report.load_strict(quick_reports[0])
    ceilings = doc["context"]["ceilings"]["cpu"]
    for key in ("fp32", "memory"):
        assert ceilings[key]["measured"] > 0, ceilings[key]
        assert ceilings[key]["measured_source"].startswith("the best of 3 runs of ")
        assert ceilings[key]["bound"] > 0 and ceilings[key]["bound_source"]
    assert ceilings["fp32"]["peak_source"].startswith(f"{doc['context']['cpu_logical_cores']} "
                                                      "logical CPUs x ")
    points = doc["pairbench"]["analyses"]["roofline"]["cpu"]["points"]
    assert points and all(p["pct_of_attainable"] <= 100 for p in points if "pct_of_attainable" in p)
    ok = [c for c in doc["pairbench"]["cases"] if c["status"] == "ok"]
    assert all("latency_bound" in c and "cache_resident" in c for c in ok)
    assert not any("above_ceiling" in c for c in doc["pairbench"]["cases"])


def test_no_case_of_a_quick_run_stands_above_100_percent_of_its_peak(quick_reports):
    # pct_peak divides by the fp32 peak or the run's probe where that beat it; a case above both
    # reads 100 with beat_peak_by. The validator names any figure above 100.
    doc = validate_report.load_strict(quick_reports[0])
    fp32 = doc["context"]["ceilings"]["cpu"]["fp32"]
    assert doc["context"]["pct_peak_gflops"]["cpu"] == max(fp32["peak"], fp32["measured"])
    ok = [c for c in doc["pairbench"]["cases"] if c["status"] == "ok" and "pct_peak" in c]
    assert ok and all(0 < c["pct_peak"] <= 100 for c in ok)
    assert all(c["pct_peak"] == 100 and c["beat_peak_by"] > 0 for c in ok if "beat_peak_by" in c)
    ok[0]["pct_peak"] = 120.0
    found = validate_report.impossible_figures(doc)
    assert len(found) == 1 and found[0].startswith(ok[0]["name"] + ": at 120% of its device's peak")


def test_a_figure_above_its_ceiling_is_named_by_the_validator(quick_reports):
    doc = validate_report.load_strict(quick_reports[0])
    case = next(c for c in doc["pairbench"]["cases"]
                if c["status"] == "ok" and c["op"] == "gemm" and c["impl"] == "openblas")
    case["gflops"] = 10 * doc["context"]["ceilings"]["cpu"]["fp32"]["bound"]
    found = validate_report.impossible_figures(doc)
    assert len(found) == 1 and found[0].startswith(case["name"] + ": ") and "fp32 ceiling" in found[0]


def test_a_figure_of_several_ranks_is_held_per_rank(quick_reports):
    # A data-parallel case's figure is every rank's together, each on a device of its own.
    doc = validate_report.load_strict(quick_reports[0])
    case = next(c for c in doc["pairbench"]["cases"]
                if c["status"] == "ok" and c["op"] == "gemm" and c["impl"] == "openblas")
    bound = doc["context"]["ceilings"]["cpu"]["fp32"]["bound"]
    case["shape"]["ranks"] = "8"
    case["gflops"] = 4 * bound  # eight devices at half their bound
    assert validate_report.impossible_figures(doc) == []
    case["gflops"] = 10 * bound
    assert [f.split(": ")[0] for f in validate_report.impossible_figures(doc)] == [case["name"]]


def test_a_copy_over_the_host_link_is_held_to_it_whatever_its_size():
    # No cache holds a copy between host and device: a label saying one does changes nothing.
    doc = json.loads(H100_SAMPLE.read_text())
    case = next(c for c in doc["pairbench"]["cases"]
                if c["status"] == "ok" and c.get("role") == "transfer"
                and c["shape"].get("dir") == "h2d")
    doc["context"]["ceilings"] = {"gpu": {"host_link": {"bound": 64.0, "bound_source": "PCIe 5"}}}
    case["cache_resident"] = True
    case["gbs"] = 640.0
    found = validate_report.impossible_figures(doc)
    assert len(found) == 1 and found[0].startswith(case["name"] + ": ") and "host_link" in found[0]


def test_a_winograd_convolutions_effective_rate_is_held_to_no_compute_ceiling():
    # Its GFLOP/s counts the direct form's multiplications, which Winograd does not all do.
    doc = json.loads(H100_SAMPLE.read_text())
    doc["context"]["ceilings"] = {"gpu": {"fp32": {"bound": 66900.0, "bound_source": "H100"}}}
    case = next(c for c in doc["pairbench"]["cases"]
                if c["status"] == "ok" and "winograd" in c.get("impl_detail", ""))
    case["gflops"] = 80000.0
    assert validate_report.impossible_figures(doc) == []
    case["impl_detail"] = "cudnn 91400: implicit_gemm, fma math"
    assert [f.split(": ")[0] for f in validate_report.impossible_figures(doc)] == [case["name"]]


def test_committed_samples_are_valid_reports():
    # Reports from before the energy meters and --price: every new field is optional.
    samples = sorted((ROOT / "reports" / "samples").glob("*.json"))
    assert samples
    for path in samples:
        assert validate_report.problems(validate_report.load_strict(path)) == [], path


@pytest.fixture
def metered():
    """The H100 sample with meters and prices written in, every figure consistent."""
    doc = with_energy(json.loads(H100_SAMPLE.read_text()))
    assert validate_report.problems(doc) == []
    return doc


def first_metered(doc):
    return next(c for c in doc["pairbench"]["cases"] if "energy" in c)


def test_validator_holds_energy_to_power_times_time(metered):
    case = first_metered(metered)
    e = case["energy"]
    e["joules_per_iter"] *= 2
    assert validate_report.problems(metered) == [
        f"{case['name']}: energy: 10 J per iteration is not mean power x metered time / "
        f"iterations (100 W x 0.5 s / 10 = 5 J)"]
    e["joules_per_iter"] = 5.04  # within 1%
    assert validate_report.problems(metered) == []
    e["mean_power_w"] = float("inf")  # what json reads 1e400 as
    assert validate_report.energy_problems(metered) == [
        f"{case['name']}: energy: mean power inf W is not a positive finite figure"]


def test_validator_holds_dollars_to_price_times_hours(metered):
    gpu = metered["pairbench"]["analyses"]["projection"]["devices"]["gpu"]
    right = gpu["epoch_usd"]
    gpu["epoch_usd"] = 2 * right
    assert validate_report.problems(metered) == [
        "projection/gpu: epoch_usd 0.0137128 is not usd_per_hour x epoch_h (4 x 0.00171409 = "
        "0.00685638)"]
    gpu["epoch_usd"] = right * (1 + 1e-7)  # within 1e-6
    assert validate_report.problems(metered) == []


@pytest.mark.parametrize("where, change, message", [
    ("case", lambda e: e.pop("mean_power_w"), "'mean_power_w' is a required property"),
    ("case", lambda e: e.update(joules_per_gb=1.0), "is valid under each of"),
    ("case", lambda e: e.update(status="unavailable"), "'reason' is a required property"),
    ("case", lambda e: e.update(iterations=0), "0 is less than the minimum of 1"),
    ("case", lambda e: e.update(sm_clock_mhz=1980), "'memory_clock_mhz' is a dependency of"),
    ("meter", lambda m: m.pop("idle_power_w"), "'idle_power_w' is a required property"),
    ("projection", lambda d: d.pop("usd_per_hour"), "'usd_per_hour' is a dependency of"),
    ("price", lambda p: p.update(cpu=-1), "-1 is less than the minimum of 0"),
])
def test_malformed_energy_is_a_schema_error(metered, where, change, message):
    doc = copy.deepcopy(metered)
    change({"case": lambda: first_metered(doc)["energy"],
            "meter": lambda: doc["context"]["energy"]["cpu"],
            "projection": lambda: doc["pairbench"]["analyses"]["projection"]["devices"]["cpu"],
            "price": lambda: doc["context"]["price_usd_per_hour"]}[where]())
    found = validate_report.problems(doc)
    assert any(message in p for p in found), found


def h100():
    return json.loads(H100_SAMPLE.read_text())


def gpu_case(doc):
    return next(c for c in doc["pairbench"]["cases"] if c["device"] == "gpu"
                and c["status"] == "ok" and c["op"] == "gemm")


def test_an_error_case_with_a_time_is_one_short_line():
    # The schema's own message dumped the whole case (1 KB) on one line.
    doc = h100()
    case = gpu_case(doc)
    case.update(status="error", verified=False, message="boom")
    i = doc["pairbench"]["cases"].index(case)
    assert validate_report.problems(doc) == [
        f"pairbench/cases/{i} ({case['name']}): a case whose status is 'error' carries no time"]


@pytest.mark.parametrize("where, value", [
    (("context", "machine_probes", 0, "copy_gbs"), "fast"),
    (("context", "machine_probes", 1, "when"), 5),
    (("context", "machine_drift", "copy_gbs", "min"), None),
    (("context", "gpu_memory_bytes"), "zz"),
    (("context", "num_cpus"), 0),
    (("benchmarks", 0, "run_name"), 5),
    (("pairbench", "cases", 0, "name"), []),
    (("pairbench", "cases", 0, "flops"), "zz"),
    (("pairbench", "cases", 0, "noisy"), "yes"),
    (("pairbench", "cases", 0, "time", "mean_s"), -5),
    (("pairbench", "cases", 0, "time", "stddev_s"), None),
    (("pairbench", "analyses", "projection", "devices", "cpu", "samples_per_s"), "zz"),
    (("pairbench", "analyses", "projection", "devices", "cpu", "epoch_h"), "zz"),
    (("pairbench", "analyses", "memory_bandwidth", "cpu", "stream", 0, "gbs_with_write_allocate"),
     "zz"),
    (("pairbench", "cases"), []),
])
def test_every_field_the_scripts_read_is_typed(where, value):
    # Each passed the schema, and then crashed the validator's own checks or a script.
    doc = h100()
    node = doc
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    found = validate_report.problems(doc)
    assert len(found) == 1 and found[0].startswith("/".join(map(str, where))), found
    assert len(found[0]) < 200


def test_a_training_step_without_flops_is_refused():
    doc = h100()
    case = next(c for c in doc["pairbench"]["cases"] if c["op"] == "train")
    case.update(flops=0.0, gflops=0.0)
    found = validate_report.problems(doc)
    assert len(found) == 1 and found[0].endswith("0.0 is less than or equal to the minimum of 0")


def test_a_second_case_of_a_name_is_refused():
    doc = h100()
    doc["pairbench"]["cases"].append(copy.deepcopy(gpu_case(doc)))
    assert validate_report.problems(doc) == [f"{gpu_case(doc)['name']}: a second case of this name"]


def test_a_cache_resident_stream_kernel_is_held_to_no_memory_bound():
    # A STREAM case inside the cache (a --shape with a small n) is the memory_bandwidth
    # analysis's best where it is the only one; pairbench holds no cache to the memory's bound.
    doc = h100()
    entry = doc["pairbench"]["analyses"]["memory_bandwidth"]["gpu"]["stream"][0]
    case = next(c for c in doc["pairbench"]["cases"] if c["name"] == entry["name"])
    entry["gbs"] = entry["gbs_with_write_allocate"] = 1e6
    def above(doc):
        return [p for p in validate_report.problems(doc)
                if p.startswith("memory_bandwidth/gpu/") and "memory ceiling" in p]
    assert above(doc)
    case["cache_resident"] = True
    assert not above(doc)


def timed_at(doc, case, seconds):
    """case as if each of its iterations took `seconds`: its time record and its entries."""
    case["time"].update(median_s=seconds, min_s=seconds, mean_s=seconds, stddev_s=0.0, cv=0.0,
                        repetition_medians_s=[seconds] * case["time"]["repetitions"])
    for b in doc["benchmarks"]:
        if b["run_name"] == f"{case['name']}/manual_time":
            b["real_time"] = seconds / validate_report.UNIT_S[b["time_unit"]]


def test_each_figure_is_its_work_over_its_median():
    # A GPU GEMM at 1e-12 s (3e7 GFLOP/s) passed: the ceilings read the stored GFLOP/s.
    doc = h100()
    case = gpu_case(doc)
    timed_at(doc, case, 1e-12)
    found = validate_report.problems(doc)
    assert found and all(p.startswith(f"{case['name']}: ") for p in found), found
    assert any(p.startswith(f"{case['name']}: gflops {case['gflops']:.4g} is not flops / median "
                            "time") for p in found), found
    # Written as that time makes it: above the GPU's ceiling.
    case["gflops"], case["gbs"] = case["flops"] / 1e-12 / 1e9, case["min_bytes"] / 1e-12 / 1e9
    found = validate_report.problems(doc)
    assert "is above the gpu's fp32 ceiling" in found[0], found
    # and its roofline point, left as it was, is not its case's
    assert found[1:] == [next(p for p in found if p.startswith(f"roofline/gpu: {case['name']}: "))]


@pytest.mark.parametrize("text, says", [
    ('{"x": 1e400}', "beyond a double's range"),  # json reads it as Infinity
    ('{"x": 1' + "0" * 400 + "}", "beyond a double's range"),  # an int no float holds
    ("[" * 100000, "nested too deeply"),  # RecursionError
    ('{"a": 1, "a": 2}', "the key 'a' is given twice in one object"),  # json kept the last
    ('{"host": "h\\ud800"}', "a lone surrogate"),  # no script could print it
    ('{"names": ["\\udfff"]}', "a lone surrogate"),
], ids=["1e400", "huge int", "deep", "duplicate key", "lone surrogate", "in an array"])
def test_load_strict_refuses_what_serde_refuses(text, says, tmp_path):
    path = tmp_path / "x.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=says):
        validate_report.load_strict(path)
    assert validate_report.main(["v", str(path)]) == 2


def test_validator_usage(capsys):
    assert validate_report.main(["v", "--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: validate_report.py REPORT...")
    assert validate_report.main(["v", "--bogus", str(H100_SAMPLE)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("validate_report.py: error: unknown option --bogus")


@pytest.mark.parametrize("ranks, says", [
    ("0", "'0' does not match"), ("two", "'two' does not match"), ("1e9", "'1e9' does not match"),
    ("-1", "'-1' does not match"), ("64", "ran over 64 ranks, more than the run's 1"),
])
def test_a_cases_ranks_are_a_count_the_run_had(ranks, says):
    # '0' crashed every script (a division by it), '-1' or '1e9' let any figure through the
    # ceilings (they hold each rank's share of it).
    doc = h100()
    case = gpu_case(doc)
    case["shape"]["ranks"] = ranks
    found = validate_report.problems(doc)
    assert says in found[0] and all(case["name"] in p for p in found), found


def test_a_robust_cv_no_positive_times_can_give_is_refused():
    # At least half the times lie in (0, median]: the median absolute deviation is at most the
    # median. A made-up 500% excused a tenfold slowdown as noise in compare.py.
    doc = h100()
    case = gpu_case(doc)
    case["noisy"], case["time"]["robust_cv"] = True, 1.4826  # the most positive times can spread
    assert validate_report.problems(doc) == []
    case["time"]["robust_cv"] = 5.0
    found = validate_report.problems(doc)
    assert len(found) == 1 and found[0].endswith("5.0 is greater than the maximum of 1.48261")


def test_a_case_is_noisy_where_its_robust_cv_is_above_the_runs_threshold():
    # compare.py excuses a noisy case's difference within twice its robust cv: a case marked
    # noisy with a robust cv under the threshold, or steady above it, is not what pairbench wrote.
    doc = h100()
    case = gpu_case(doc)
    threshold = doc["context"]["noisy_cv_threshold"]
    case["noisy"], case["time"]["robust_cv"] = True, 2 * threshold
    assert validate_report.problems(doc) == []
    case["time"]["robust_cv"] = threshold  # not above it
    assert validate_report.problems(doc) == [
        f"{case['name']}: noisy is true with a robust cv of {threshold:.6g} against the run's "
        f"threshold {threshold:.6g}"]
    case["noisy"], case["time"]["robust_cv"] = False, 1.0
    assert validate_report.problems(doc) == [
        f"{case['name']}: noisy is false with a robust cv of 1 against the run's threshold "
        f"{threshold:.6g}"]


def test_a_machine_probe_above_the_cpus_ceiling_is_named(quick_reports):
    # compare.py weighs CPU times against the probes: a probe 1000x too fast excused any slowdown.
    doc = validate_report.load_strict(quick_reports[0])
    assert validate_report.problems(doc) == []
    probe = doc["context"]["machine_probes"][1]
    probe["compute_gflops"] *= 1000
    found = validate_report.problems(doc)
    assert len(found) == 1 and found[0].startswith(
        f"machine probe {probe['when']!r}: compute_gflops") and "fp32 ceiling" in found[0], found


def test_a_device_file_is_refused_and_every_report_is_checked(tmp_path, capsys):
    # /dev/zero was read until memory ran out; an unreadable report ended the check of the rest.
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert validate_report.main(["v", "/dev/zero", str(bad), str(H100_SAMPLE)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["/dev/zero: not a readable JSON report: [Errno 22] a device or socket, not a file",
                   f"{bad}: not a readable JSON report: Expecting property name enclosed in double "
                   "quotes: line 1 column 2 (char 1)"]


def test_a_speedup_or_an_epoch_that_is_not_its_cases_is_named():
    # The charts and compare.py read the analyses: a speedup of 1e300 or an epoch of 1e308 h
    # passed the validator and reached a chart.
    doc = h100()
    row = next(r for r in doc["pairbench"]["analyses"]["speedup"] if "speedup" in r)
    row["speedup"] = 1e300
    epoch = doc["pairbench"]["analyses"]["projection"]["devices"]["gpu"]
    epoch["training_h"] = 1e308
    found = validate_report.problems(doc)
    assert len(found) == 2, found
    assert found[0].startswith(f"speedup/{row['op']}/{row['shape']}: speedup 1e+300 is not the "
                               "CPU's time over the GPU's")
    assert found[1].startswith("projection/gpu: training_h 1e+308 is not 90 epochs of ")
    doc = h100()
    doc["pairbench"]["analyses"]["speedup"][0]["cpu"]["name"] = "gemm/cpu/none/m=1"
    doc["pairbench"]["analyses"]["projection"]["devices"]["cpu"]["samples_per_s"] *= 2
    found = validate_report.problems(doc)
    assert len(found) == 3, found
    assert found[0].endswith("its cpu side gemm/cpu/none/m=1 is no verified case")
    assert "which no verified cpu training step of " in found[1]  # no step ran that fast
    assert "is not 1281167 images at" in found[2]


def test_a_verified_case_is_held_to_its_tolerance():
    # A case said ok with an error 1e9 times its tolerance passed; so did a PyTorch result that
    # had failed its check.
    doc = json.loads((ROOT / "reports" / "samples" / "quick-cpu-only.json").read_text())
    case = next(c for c in doc["pairbench"]["cases"] if c["status"] == "ok")
    case["max_error"], case["tolerance"] = 1e3, 1e-6
    ref = next(c for c in doc["pairbench"]["references"]["torch"]["cases"]
               if c["status"] == "ok")
    ref["max_error"], ref["tolerance"] = 1.0, 1e-6
    found = validate_report.problems(doc)
    assert found == [
        f"{case['name']}: verified with an error of 1000, above its tolerance 1e-06",
        f"references/torch: {ref['name']}: ok with an error of 1, above its tolerance 1e-06"]


def test_a_speedup_side_is_a_case_of_its_op_with_its_figure():
    doc = h100()
    rows = doc["pairbench"]["analyses"]["speedup"]
    row = next(r for r in rows if "speedup" in r and r["op"] == "gemm")
    conv = next(c for c in doc["pairbench"]["cases"] if c["op"] == "conv" and c["status"] == "ok")
    row["cpu"]["name"] = conv["name"]  # a convolution as a GEMM's side
    stream = next(r for r in rows if r.get("gpu", {}).get("metric") == "GB/s")
    del stream["gpu"]["gbs"]  # a side read in GB/s without it: plot.py's KeyError
    found = validate_report.problems(doc)
    assert len(found) == 2, found
    assert found[0].endswith(f"its cpu side {conv['name']} is a cpu conv case")
    assert found[1] == (f"speedup/{stream['op']}/{stream['shape']}: its gpu side, read in GB/s, "
                        "gives no gbs")


def test_a_speedup_side_gives_its_cases_device_time_and_rate():
    # A hand-edited report could make up a consistent speedup: the CPU side 1000x slower than its
    # case, the speedup 1000x larger; or a CPU case as the GPU's side.
    doc = h100()
    rows = [r for r in doc["pairbench"]["analyses"]["speedup"] if "speedup" in r]
    slow, rate, swapped = rows[:3]
    where = [f"speedup/{r['op']}/{r['shape']}" for r in (slow, rate, swapped)]
    median = slow["cpu"]["time_s"]
    slow["cpu"]["time_s"] *= 1000
    slow["speedup"] *= 1000
    fig = "gbs" if rate["gpu"]["metric"] == "GB/s" else "gflops"
    rate["gpu"][fig] *= 2
    swapped["gpu"]["name"] = swapped["cpu"]["name"]
    found = validate_report.problems(doc)
    assert found == [
        f"{where[0]}: its cpu side's time {median * 1000:.6g} s is not its case's median "
        f"({median:.6g} s)",
        f"{where[1]}: its gpu side's rate is not its case's (" + ", ".join(
            f"{f} {rate['gpu'][f]:.6g} against {rate['gpu'][f] / (2 if f == fig else 1):.6g}"
            for f in ("gflops", "gbs") if f in rate["gpu"]) + ")",
        f"{where[2]}: its gpu side {swapped['cpu']['name']} is a cpu {swapped['op']} case"], found


def test_a_case_name_holds_no_control_character_or_table_bar():
    # A newline and a '|' in a name forged a row of compare.py's Markdown table.
    doc = h100()
    case = doc["pairbench"]["cases"][0]
    case["name"] += " | 1 us |\n| forged"
    found = validate_report.problems(doc)
    assert found and all("\n" not in line for line in found), found
    assert any("pairbench/cases/0/name" in line and "does not match" in line for line in found)


def test_roofline_points_and_stream_entries_are_their_cases():
    # The charts read these figures, not the cases: a hand-edited point or entry drew a roofline
    # or a STREAM bar no case measured.
    doc = h100()
    an = doc["pairbench"]["analyses"]
    points = [p for p in an["roofline"]["gpu"]["points"] if p.get("pct_of_attainable", 100) < 50]
    faster, lifted, unknown = points[:3]
    faster["gflops"] *= 2
    lifted["pct_of_attainable"] *= 2
    unknown["name"] = unknown["name"].replace("/gpu/", "/cpu/")
    copy_, scale, add = an["memory_bandwidth"]["gpu"]["stream"][:3]
    copy_["gbs"] *= 0.9
    scale["pct_of_best"] /= 2
    add["name"] = scale["name"]
    found = validate_report.problems(doc)
    assert any(line.startswith(f"roofline/gpu: {faster['name']}: gflops {faster['gflops']:.6g}, "
                               "where its case gives") for line in found), found
    assert any(line.startswith(f"roofline/gpu: {lifted['name']}: pct_of_attainable "
                               f"{lifted['pct_of_attainable']:.6g}, where") for line in found), \
        found
    assert f"roofline/gpu: {unknown['name']}: no verified gpu case of this name" in found
    assert any(line.startswith(f"memory_bandwidth/gpu/copy: gbs {copy_['gbs']:.6g}, where its "
                               "case gives") for line in found), found
    assert any(line.startswith(f"memory_bandwidth/gpu/scale: pct_of_best "
                               f"{scale['pct_of_best']:.6g}, where") for line in found), found
    assert (f"memory_bandwidth/gpu/add: {scale['name']} is no verified gpu STREAM add case"
            in found)
    assert len(found) == 6, found


def test_the_parallelism_and_batch_sweeps_are_their_cases():
    # The parallelism and batch charts draw these points: a made-up thread scaling passed.
    doc = h100()
    an = doc["pairbench"]["analyses"]
    conv, _, stream, _ = an["parallelism"]["cpu"]
    sms = an["parallelism"]["gpu"][0]
    batch = an["batch"]["gpu"][0]
    conv["points"][-1]["throughput"] *= 2  # as if 16 threads had done twice the work
    stream["points"][1]["threads"] = 3  # no case ran at 3 threads
    sms["points"][2]["efficiency"] = 1.0
    batch["points"][0]["speedup"] = 2.0
    found = validate_report.problems(doc)
    def where(analysis, dev, i, e):
        return f"{analysis}/{dev}/{i} ({e['op']}/{e['impl']}/{e['shape']})"
    p = conv["points"][-1]
    assert found[0].startswith(f"{where('parallelism', 'cpu', 0, conv)}: at threads="
                               f"{p['threads']:g}: throughput {p['throughput']:.6g}, where its "
                               "case gives "), found
    assert found[1] == f"{where('parallelism', 'cpu', 2, stream)}: no verified case at threads=3"
    assert found[2].startswith(f"{where('parallelism', 'gpu', 0, sms)}: at sms="
                               f"{sms['points'][2]['sms']:g}: efficiency 1, where"), found
    assert found[3] == (f"{where('batch', 'gpu', 0, batch)}: at batch="
                        f"{batch['points'][0]['batch']:g}: speedup 2, where its case gives 1")
    assert len(found) == 4, found


def test_the_projection_and_batch_series_are_steps_that_ran():
    # The headline: a GPU epoch of minutes, its samples/s and epoch consistent with each other,
    # passed where no step ran that fast.
    doc = h100()
    an = doc["pairbench"]["analyses"]
    pr = an["projection"]
    gpu = pr["devices"]["gpu"]
    gpu["samples_per_s"] *= 10
    gpu["epoch_s"], gpu["epoch_h"] = gpu["epoch_s"] / 10, gpu["epoch_h"] / 10
    gpu["training_h"] = pr["epochs"] * gpu["epoch_h"]
    an["batch_size"]["devices"]["cpu"][0]["batch"] = 7  # no step ran at batch 7
    assert validate_report.problems(doc) == [
        f"projection/gpu: {gpu['samples_per_s']:.6g} samples/s, which no verified gpu training "
        f"step of {gpu['model']}, {gpu['impl']}, {gpu['dtype']} at batch {gpu['batch']} gave",
        f"batch_size/cpu/0: {an['batch_size']['devices']['cpu'][0]['samples_per_s']:.6g} "
        f"samples/s, which no verified cpu training step of cnn, onednn, fp32 at batch 7 gave"]
