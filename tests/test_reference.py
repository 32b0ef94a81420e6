"""PyTorch beside pairbench (scripts/reference.py, scripts/torch_reference.py): the merge into a
report (names, ratios, Google Benchmark entries, a schema-valid report), a torch result that
failed its check or stands above its ceiling keeping no time, torch missing, and the summary's
table; where torch is installed (build/venv-torch), the torch side on small workloads of every
op: each passes its float64 check, and each fails it when its result is spoiled."""
import copy
import json
import os
import subprocess
import sys

import pytest

import pbreport
import reference
import validate_report
from conftest import ROOT

SAMPLE = ROOT / "reports" / "samples" / "quick-cpu-only.json"
REFERENCE = ROOT / "scripts" / "reference.py"
TORCH_PY = ROOT / "build" / "venv-torch" / "bin" / "python"


def sample():
    return pbreport.load(SAMPLE)


def results(doc, factor=2.0, **override):
    """torch_reference.py's output for doc: every workload ok at factor x pairbench's best."""
    cases = {}
    for w in reference.workloads(doc):
        t = factor * w["pairbench"]["median_s"]
        cases[w["name"]] = {"status": "ok", "median_s": t, "min_s": t, "runs": 5,
                            "max_error": 1e-7, "tolerance": 1e-5, "check": "test"}
    cases.update(override)
    return {"torch": "2.15.0", "build": {"onednn": "3.13.3"}, "cases": cases}


def test_every_workload_gets_a_torch_case_named_as_pairbench_names_it():
    doc = sample()
    wl = reference.workloads(doc)
    assert reference.merge(doc, results(doc)) == 0
    ref = doc["pairbench"]["references"]["torch"]
    assert len(ref["cases"]) == len(wl) > 50
    shapes = {c["name"].split("/", 3)[3] for c in doc["pairbench"]["cases"]}
    for c in ref["cases"]:
        op, dev, impl, shape = c["name"].split("/", 3)
        assert (op, dev, impl) == (c["op"], c["device"], "torch") and shape in shapes
        assert c["ratio"] == pytest.approx(0.5)
    # Every op family of the suite that ran, collectives (ranks) aside.
    assert {c["op"] for c in ref["cases"]} == {
        c["op"] for c in pbreport.ok_cases(doc)} - {"collective"}
    # Google Benchmark entries, and a report that still validates.
    entries = [b for b in doc["benchmarks"] if "/torch/" in b["name"]]
    assert len(entries) == len(wl)
    assert all(b["name"].endswith("/manual_time") and b["real_time"] > 0 for b in entries)
    assert validate_report.problems(doc) == []
    assert all(m[2] == pytest.approx(0.5) for m in pbreport.reference_medians(doc))


def test_pairbench_best_is_the_fastest_impl_and_naive_alone_is_left_out():
    doc = sample()
    wl = {w["name"]: w for w in reference.workloads(doc)}
    w = wl["gemm/cpu/torch/m=512,n=512,k=512,dtype=fp32,threads=2"]
    times = {c["impl"]: c["time"]["median_s"] for c in pbreport.ok_cases(doc)
             if c["name"].endswith("/m=512,n=512,k=512,dtype=fp32,threads=2")
             and c["op"] == "gemm"}
    assert len(times) >= 3
    assert w["pairbench"]["median_s"] == min(times.values())
    assert w["pairbench"]["impl"] == min(times, key=times.get)
    assert "gemm/cpu/torch/m=512,n=512,k=512,dtype=fp32,threads=1" not in wl  # naive only


def test_a_torch_result_that_failed_its_check_keeps_no_time():
    doc = sample()
    name = "conv/cpu/torch/dir=fwd,batch=8,c=64,h=56,w=56,k=64,r=3,stride=1,pad=1,dtype=fp32,threads=2"
    bad = {"status": "error", "max_error": 0.3, "tolerance": 1e-5, "check": "every point",
           "message": "y: error 0.3 above its tolerance 1e-05"}
    assert reference.merge(doc, results(doc, **{name: bad})) == 1
    case = next(c for c in doc["pairbench"]["references"]["torch"]["cases"] if c["name"] == name)
    assert case["status"] == "error" and "time" not in case and "ratio" not in case
    entry = next(b for b in doc["benchmarks"] if b["name"] == f"{name}/manual_time")
    assert entry["error_occurred"] and entry["real_time"] == 0
    assert validate_report.problems(doc) == []
    # The schema refuses an error that carries a time.
    spoiled = copy.deepcopy(doc)
    bad_case = next(c for c in spoiled["pairbench"]["references"]["torch"]["cases"]
                    if c["name"] == name)
    bad_case["time"] = {"median_s": 1.0, "min_s": 1.0, "runs": 1}
    assert validate_report.problems(spoiled)


def test_a_torch_time_above_the_ceiling_is_an_error():
    doc = sample()
    name = "gemm/cpu/torch/m=512,n=512,k=512,dtype=fp32,threads=2"
    fast = {"status": "ok", "median_s": 1e-9, "min_s": 1e-9, "runs": 5, "max_error": 0.0,
            "tolerance": 1e-5, "check": "test"}
    assert reference.merge(doc, results(doc, **{name: fast})) == 1
    case = next(c for c in doc["pairbench"]["references"]["torch"]["cases"] if c["name"] == name)
    assert case["status"] == "error" and "ceiling" in case["message"] and "time" not in case


@pytest.mark.parametrize("result, says", [
    ({"max_error": 1.0, "tolerance": 1e-6}, "above its tolerance 1e-06, yet said ok"),
    ({"min_s": 1.0, "median_s": 0.1}, "is slower than its median"),
], ids=["error above tolerance", "min above median"])
def test_a_torch_result_said_ok_that_cannot_be_is_an_error(result, says):
    # Both were merged with a ratio and a time, and the report validated.
    doc = sample()
    name = "gemm/cpu/torch/m=512,n=512,k=512,dtype=fp32,threads=2"
    ok = {"status": "ok", "median_s": 0.1, "min_s": 0.1, "runs": 5, "max_error": 0.0,
          "tolerance": 1e-5, "check": "test"}
    assert reference.merge(doc, results(doc, **{name: {**ok, **result}})) == 1
    case = next(c for c in doc["pairbench"]["references"]["torch"]["cases"] if c["name"] == name)
    assert case["status"] == "error" and says in case["message"] and "time" not in case


def run_reference(*args):
    return subprocess.run([sys.executable, str(REFERENCE), *map(str, args)], capture_output=True,
                          text=True, timeout=300)


def test_an_empty_output_name_is_refused_and_a_missing_report_named(tmp_path):
    # -o "" wrote over the report itself; a report in a missing folder was "cannot write".
    report = tmp_path / "r.json"
    report.write_bytes(SAMPLE.read_bytes())
    res = tmp_path / "torch.json"
    res.write_text(json.dumps(results(sample())))
    r = run_reference(report, "--results", res, "-o", "")
    assert r.returncode == 2 and r.stderr.splitlines() == [
        "reference.py: error: -o needs a file name (see --help)"]
    assert report.read_bytes() == SAMPLE.read_bytes()
    # Results that match none of the report's workloads: another report's, not torch's word.
    other = {"gemm/cpu/torch/m=3,n=3,k=3,dtype=fp32,threads=1":
             results(sample())["cases"][next(iter(results(sample())["cases"]))]}
    res.write_text(json.dumps({**results(sample()), "cases": other}))
    r = run_reference(report, "--results", res)
    assert r.returncode == 2 and r.stderr.splitlines() == [
        f"reference.py: error: {res}: none of its 1 results is a workload of {report} (the "
        "results of another report?)"]
    res.write_text(json.dumps({**results(sample()), "cases": {}}))
    r = run_reference(report, "--results", res)
    assert r.returncode == 2 and r.stderr.splitlines() == [f"reference.py: error: {res}: no results"]
    assert report.read_bytes() == SAMPLE.read_bytes()
    missing = tmp_path / "nodir" / "r.json"
    r = run_reference(missing, "--check")
    assert r.returncode == 2 and r.stderr.splitlines() == [
        f"reference.py: error: {missing}: no such file"]


def test_the_script_merges_prints_the_ratio_column_and_the_summary_shows_it(tmp_path):
    doc = sample()
    res = tmp_path / "torch.json"
    res.write_text(json.dumps(results(doc, factor=4.0)))
    out = tmp_path / "report.json"
    r = run_reference(SAMPLE, "-o", out, "--results", res)
    assert r.returncode == 0, r.stderr
    assert "train/cpu/torch/model=resnet50,pass=train,batch=8,image=64,dtype=fp32,threads=2: 0.25" \
        in r.stdout
    assert "conv on the cpu: median 0.25" in r.stdout
    plot = subprocess.run([sys.executable, str(ROOT / "scripts" / "plot.py"), str(out), "-o",
                           str(tmp_path / "charts")], capture_output=True, text=True, timeout=300)
    assert plot.returncode == 0, plot.stderr
    summary = (tmp_path / "charts" / "summary.md").read_text()
    assert "**PyTorch 2.15.0 beside pairbench**" in summary
    assert "| train | cpu | 0.25 | 0.25-0.25 |" in summary


@pytest.mark.parametrize("args, says", [
    (["--torch-python", sys.executable], "cannot import torch"),
    (["--torch-python", "/nonexistent/python"], "cannot import torch"),
    (["--results", "/nonexistent.json"], "no such file"),
])
def test_bad_inputs_exit_2_with_one_line(args, says, tmp_path):
    if "cannot import torch" in says and sys.executable and has_torch(sys.executable):
        pytest.skip("this python has torch")
    r = run_reference(SAMPLE, "-o", tmp_path / "out.json", *args)
    assert r.returncode == 2
    assert says in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.json").exists()


def test_not_a_report_exits_2(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{\"benchmarks\": []}")
    r = run_reference(bad)
    assert r.returncode == 2 and "not a pairbench report" in r.stderr


def test_run_refuses_an_unknown_reference_before_doing_anything():
    r = subprocess.run([str(ROOT / "scripts" / "run"), "--reference=jax"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "unknown reference 'jax'" in r.stderr


def has_torch(python):
    return subprocess.run([str(python), "-c", "import torch"], capture_output=True).returncode == 0


SMALL = [  # one small workload of each op the torch side runs
    ("gemm", {"m": "64", "n": "48", "k": "80", "ta": "1"}, "fp32"),
    ("gemm", {"m": "64", "n": "48", "k": "80"}, "bf16"),
    ("conv", {"dir": "fwd", "batch": "2", "c": "8", "h": "12", "w": "12", "k": "16", "r": "3",
              "stride": "1", "pad": "1"}, "fp32"),
    ("conv", {"dir": "bwd_data", "batch": "2", "c": "8", "h": "12", "w": "12", "k": "16",
              "r": "3", "stride": "2", "pad": "1"}, "fp32"),
    ("conv", {"dir": "bwd_filter", "batch": "2", "c": "8", "h": "12", "w": "12", "k": "16",
              "r": "3", "stride": "1", "pad": "1"}, "fp32"),
    ("activation", {"fn": "gelu_erf", "dir": "bwd", "n": "4096"}, "fp32"),
    ("activation", {"fn": "sigmoid", "dir": "fwd", "n": "4096"}, "fp32"),
    ("softmax", {"rows": "16", "cols": "128"}, "fp32"),
    ("loss", {"dir": "bwd", "rows": "16", "cols": "128"}, "fp32"),
    ("batchnorm", {"dir": "bwd", "batch": "2", "c": "4", "h": "6", "w": "6"}, "fp32"),
    ("stream", {"kernel": "triad", "n": "10000"}, "fp32"),
    ("train", {"model": "mlp", "pass": "train", "batch": "8"}, "fp32"),
    ("train", {"model": "cnn", "pass": "infer", "batch": "4"}, "fp32"),
]


def torch_run(tmp_path, fault=""):
    jobs = [{"name": f"{op}/cpu/torch/{','.join(f'{k}={v}' for k, v in s.items())},dtype={d},"
                     f"threads=1", "op": op, "device": "cpu", "shape": {**s, "dtype": d},
             "dtype": d, "threads": 1} for op, s, d in SMALL]
    path = tmp_path / "jobs.json"
    path.write_text(json.dumps({"min_time": 0.01, "cases": jobs}))
    r = subprocess.run([str(TORCH_PY), str(ROOT / "scripts" / "torch_reference.py"), str(path)],
                       capture_output=True, text=True, timeout=600,
                       env={**os.environ, "PAIRBENCH_REFERENCE_FAULT": fault})
    assert r.returncode == 0, r.stderr
    return {j["name"]: (j["op"], r) for j, r in zip(jobs, json.loads(r.stdout)["cases"].values())}


needs_torch = pytest.mark.skipif(not TORCH_PY.exists() or not has_torch(TORCH_PY),
                                 reason="no torch in build/venv-torch (scripts/torch_venv "
                                        "installs it; about 3 GB)")


@needs_torch
def test_torch_passes_its_float64_checks_on_every_op(tmp_path):
    for name, (_, r) in torch_run(tmp_path).items():
        assert r["status"] == "ok", (name, r)
        assert r["median_s"] > 0 and r["max_error"] <= r["tolerance"]


@needs_torch
@pytest.mark.parametrize("op", sorted({op for op, _, _ in SMALL}))
def test_a_spoiled_torch_result_fails_its_check(op, tmp_path):
    for name, (case_op, r) in torch_run(tmp_path, fault=op).items():
        if case_op == op:
            assert r["status"] == "error" and "median_s" not in r, (name, r)
            assert "above its tolerance" in r["message"]


@pytest.mark.parametrize("args, says", [([], "the following arguments are required: report"),
                                        (["/nonexistent.json"], "no such file"),
                                        ([str(SAMPLE), "--bogus"], "unrecognized arguments: --bogus"),
                                        ([str(SAMPLE), "--min-time=inf"], "at most 60"),
                                        ([str(SAMPLE), "-o", "/nonexistent-dir/x.json"],
                                         "no such directory")])
def test_the_wrapper_says_a_bad_call_before_installing_anything(args, says, tmp_path):
    r = subprocess.run([str(ROOT / "scripts" / "reference"), *args], capture_output=True,
                       text=True, timeout=60,
                       env={**os.environ, "PAIRBENCH_TORCH_VENV": str(tmp_path / "venv")})
    assert r.returncode == 2 and says in r.stderr
    assert not (tmp_path / "venv").exists()  # torch_venv never ran


def one_result(**r):
    """torch_reference.py's output for the sample's first workload alone: r."""
    return {"torch": "2.15.0", "cases": {reference.workloads(sample())[0]["name"]: r}}


OK = {"status": "ok", "median_s": 0.003, "min_s": 0.0029, "runs": 10, "max_error": 0.0,
      "tolerance": 1e-5, "check": "test"}


@pytest.mark.parametrize("res, says", [
    ([], "(root): [] is not of type 'object'"),
    ({"cases": [1, 2]}, "cases: [1, 2] is not of type 'object'"),
    (one_result(median_s=0.003), "'status' is a required property"),
    (one_result(**dict(OK, status="banana")), "'banana' is not one of"),
    (one_result(**{k: v for k, v in OK.items() if k != "min_s"}), "'min_s' is a required property"),
    (one_result(**dict(OK, median_s="fast")), "'fast' is not of type 'number'"),
    (one_result(**dict(OK, median_s=0)), "0 is less than or equal to the minimum of 0"),
    (one_result(**dict(OK, median_s=-0.003)), "-0.003 is less than or equal to the minimum of 0"),
    # The schema wants a check's error and tolerance, which torch_reference.py always writes.
    (one_result(**{k: v for k, v in OK.items() if k != "max_error"}),
     "'max_error' is a required property"),
], ids=["list", "cases list", "no status", "bad status", "no min", "string", "zero", "negative",
        "no max_error"])
def test_results_that_are_not_torch_references_are_refused(res, says, tmp_path):
    path = tmp_path / "res.json"
    path.write_text(json.dumps(res))
    r = run_reference(SAMPLE, "-o", tmp_path / "out.json", "--results", path)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{path}: not torch_reference.py's output: " in lines[0], r.stderr
    assert says in lines[0], r.stderr
    assert not (tmp_path / "out.json").exists()


def test_a_failed_run_leaves_the_report_as_it_was(tmp_path):
    # reference.py wrote over its input report and died mid-write on a time that made an
    # infinite figure: the report was lost.
    victim = tmp_path / "victim.json"
    victim.write_bytes(SAMPLE.read_bytes())
    res = tmp_path / "res.json"
    res.write_text(json.dumps({"cases": {"x": {"status": "ok", "median_s": "fast"}}}))
    assert run_reference(victim, "--results", res).returncode == 2
    assert victim.read_bytes() == SAMPLE.read_bytes()
    # A time that puts a figure beyond a double (one held to no ceiling: a cache-resident GB/s
    # workload): that case an error, the report whole, strict and valid, nothing else left.
    doc = sample()
    name = next(w["name"] for w in reference.workloads(doc)
                if w["metric"] == "GB/s" and w["cache_resident"])
    tiny = dict(OK, median_s=1e-310, min_s=1e-310)
    res.write_text(json.dumps(results(doc, **{name: tiny})))
    r = run_reference(victim, "--results", res)
    assert r.returncode == 1, r.stderr
    out = validate_report.load_strict(victim)
    assert validate_report.problems(out) == []
    case = next(c for c in out["pairbench"]["references"]["torch"]["cases"] if c["name"] == name)
    assert case["status"] == "error" and "beyond a double's range" in case["message"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res.json", "victim.json"]


def test_write_refuses_a_non_finite_number_and_keeps_the_file(tmp_path):
    path = tmp_path / "report.json"
    path.write_text("{}")
    with pytest.raises(reference.ReferenceError, match="not written"):
        reference.write(path, {"x": float("inf")})
    assert path.read_text() == "{}" and len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize("args, says", [
    (["--min-time=inf"], "--min-time must be a number of seconds above 0 and at most 60"),
    (["--min-time=nan"], "--min-time must be a number of seconds above 0 and at most 60"),
    (["--min-time=61"], "--min-time must be a number of seconds above 0 and at most 60"),
    (["-o", "/nonexistent/x.json"], "cannot write /nonexistent/x.json: no such directory"),
    (["-o", "/tmp"], "cannot write /tmp: a directory"),
])
def test_bad_flags_exit_2_with_one_line_before_anything_runs(args, says, tmp_path):
    # --min-time=inf would have timed the first torch case forever.
    res = tmp_path / "torch.json"
    res.write_text(json.dumps(results(sample())))
    r = run_reference(SAMPLE, "--results", res, *args)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.splitlines() == [f"reference.py: error: {says} (see --help)"]
