"""The report as CI tools read it: every entry of `benchmarks` is one Google Benchmark itself
could have written (compared key for key with a plain Google Benchmark program built against the
same library), a failed case never reaches them as a time, Conbench's benchadapt and Debian's
compare.py read a report with repetitions and errors, and the rules of Bencher and
github-action-benchmark hold; the noise the report admits (cv, noisy marks, machine probes)."""
import copy
import json
import subprocess
import sys

import pytest

import validate_report

COMPARE = "/usr/share/benchmark/compare.py"
# Counter names are each program's own; everything else must match key for key.
PAIRBENCH_COUNTERS = {"GFLOP/s", "GB/s", "bytes_per_second", "items_per_second", "pct_peak",
                      "pct_copy_bw"}
REFERENCE_COUNTERS = {"GFLOP/s", "bytes_per_second"}


def kind(entry):
    if entry["run_type"] == "aggregate":
        return entry["aggregate_name"]
    return "error" if entry.get("error_occurred") else "iteration"


def key_sets(entries, counters):
    out = {}
    for e in entries:
        out.setdefault(kind(e), set(e) - counters)
    return out


def repeated_run(pairbench, path, *extra):
    """A run with three repetitions, random interleaving and one case that fails verification."""
    r = pairbench("--ops=gemm", "--devices=cpu", "--impls=omp,openblas", "--dtypes=fp32",
                  "--threads=2", "--shape=m=64,n=64,k=64", "--shape=m=32,n=48,k=40", f"--report={path}",
                  "--benchmark_min_time=0.01", "--benchmark_repetitions=3",
                  "--benchmark_enable_random_interleaving=true", *extra,
                  env={"PAIRBENCH_INJECT_FAULT": "cpu/omp/m=64"})
    assert r.returncode == 1, r.stderr  # the injected failure
    return validate_report.load_strict(path), path


@pytest.fixture(scope="module")
def repeated(pairbench, tmp_path_factory):
    return repeated_run(pairbench, tmp_path_factory.mktemp("rep") / "r.json")


@pytest.fixture(scope="module")
def repeated_with_errors(pairbench, tmp_path_factory):
    """The same, keeping Google Benchmark's error entries."""
    return repeated_run(pairbench, tmp_path_factory.mktemp("rep") / "r.json", "--keep-error-entries")


def test_every_entry_is_one_google_benchmark_writes(pairbench, repeated_with_errors, tmp_path):
    out = tmp_path / "gb.json"
    ref = pairbench.exe.parent / "tests" / "gb_reference"
    subprocess.run([str(ref), "--benchmark_repetitions=3", "--benchmark_min_time=0.01",
                    f"--benchmark_out={out}", "--benchmark_out_format=json"],
                   capture_output=True, check=True, timeout=60)
    theirs = key_sets(json.loads(out.read_text())["benchmarks"], REFERENCE_COUNTERS)
    ours = key_sets(repeated_with_errors[0]["benchmarks"], PAIRBENCH_COUNTERS)
    assert set(theirs) == {"iteration", "error", "mean", "median", "stddev", "cv"}
    assert set(ours) == set(theirs)
    for k in theirs:
        assert ours[k] == theirs[k], k
    cv = [e for e in repeated_with_errors[0]["benchmarks"] if kind(e) == "cv"]
    assert cv and all(e["time_unit"] in ("ns", "us", "ms", "s") for e in cv)


def test_a_failed_case_is_no_time_by_default(repeated, repeated_with_errors):
    doc, _ = repeated
    assert validate_report.problems(doc) == []
    failed = "gemm/cpu/omp/m=64,n=64,k=64,dtype=fp32,threads=2"
    assert not [b for b in doc["benchmarks"] if b["run_name"].startswith(failed)]
    assert not [b for b in doc["benchmarks"] if b.get("error_occurred")]
    records = [c for c in doc["pairbench"]["cases"] if c["name"] == failed]
    assert len(records) == 1 and records[0]["status"] == "error"
    assert "verification failed" in records[0]["message"]
    # The flag keeps Google Benchmark's error entries, with a zero time, as it writes them.
    kept = [b for b in repeated_with_errors[0]["benchmarks"] if b["run_name"].startswith(failed)]
    assert kept and all(b["error_occurred"] and b["real_time"] == 0 for b in kept)


def test_random_interleaving_with_repetitions_records_every_repetition(repeated):
    doc, _ = repeated
    assert validate_report.problems(doc) == []
    ok = [c for c in doc["pairbench"]["cases"] if c["status"] == "ok"]
    assert len(ok) == 3
    for c in ok:
        t = c["time"]
        assert t["repetitions"] == 3 and len(t["repetition_medians_s"]) == 3
        iterations = sum(b["iterations"] for b in doc["benchmarks"]
                         if b["run_type"] == "iteration" and b["run_name"].startswith(c["name"]))
        assert t["iterations"] == iterations  # every timed iteration of every repetition
        assert t["min_s"] <= t["median_s"] <= max(t["repetition_medians_s"]) * 10


@pytest.fixture
def conbench_env(monkeypatch):
    """What a CI job gives benchadapt: the project's repository and commit."""
    monkeypatch.setenv("CONBENCH_PROJECT_REPOSITORY", "https://github.com/example/pairbench")
    monkeypatch.setenv("CONBENCH_PROJECT_COMMIT", "0" * 40)


def test_benchadapt_yields_only_valid_results(repeated, conbench_env):
    from benchadapt.adapters import GoogleBenchmarkAdapter

    doc, path = repeated
    adapter = GoogleBenchmarkAdapter(command=["true"], result_file=path)
    results = adapter.transform_results()
    failed = {c["name"] for c in doc["pairbench"]["cases"] if c["status"] != "ok"}
    names = set()
    for res in results:
        stats = res.stats
        names.add(f"{res.tags['name']}/{res.tags['params']}".removesuffix("/manual_time"))
        assert stats["unit"] in ("B/s", "i/s", "s"), stats  # what Conbench's server accepts
        assert stats["data"] and all(v > 0 for v in stats["data"])
    assert names and not names & failed


def test_benchadapt_reads_the_default_report(pairbench, tmp_path, conbench_env):
    from benchadapt.adapters import GoogleBenchmarkAdapter

    report = tmp_path / "r.json"
    pairbench("--ops=gemm", "--devices=cpu", "--impls=omp,openblas", "--dtypes=fp32",
              "--shape=m=64,n=64,k=64", f"--report={report}", "--benchmark_min_time=0.01",
              env={"PAIRBENCH_INJECT_FAULT": "cpu/omp"})
    results = GoogleBenchmarkAdapter(command=["true"], result_file=report).transform_results()
    assert results and all(r.stats["unit"] == "B/s" for r in results)
    assert all("omp" not in r.tags["params"] for r in results)


def test_debian_compare_py_runs_its_u_test(repeated, tmp_path):
    doc, path = repeated
    other = copy.deepcopy(doc)
    for b in other["benchmarks"]:
        b["real_time"] *= 1.5
    slower = tmp_path / "slower.json"
    slower.write_text(json.dumps(other))
    r = subprocess.run([sys.executable, COMPARE, "benchmarks", str(path), str(slower)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "_pvalue" in r.stdout and "gemm/cpu/openblas" in r.stdout


@pytest.mark.parametrize("mutate,message", [
    (lambda b: b.pop("time_unit"), "time_unit"),
    (lambda b: b.update(name="x" * 1025), "1 to 1024"),
    (lambda b: b.update(name=""), "1 to 1024"),
    (lambda b: b.update(real_time="12"), "real_time"),
    (lambda b: b.pop("cpu_time"), "cpu_time"),
    (lambda b: b.update(iterations=1.5), "iterations"),
])
def test_the_strict_checker_encodes_bencher_and_github_action_benchmark(repeated, mutate, message):
    doc = copy.deepcopy(repeated[0])
    assert validate_report.ci_tool_problems(doc) == []
    mutate(doc["benchmarks"][0])
    found = validate_report.ci_tool_problems(doc)
    assert len(found) == 1 and message in found[0], found


def test_the_report_admits_its_noise(repeated):
    doc, _ = repeated
    ctx = doc["context"]
    assert ctx["noisy_cv_threshold"] > 0
    for c in doc["pairbench"]["cases"]:
        if c["status"] == "ok":
            assert c["time"]["cv"] >= 0 and c["time"]["robust_cv"] >= 0
            assert c["noisy"] == (c["time"]["robust_cv"] > ctx["noisy_cv_threshold"])
    probes = ctx["machine_probes"]
    assert [p["when"] for p in probes][0] == "start" and probes[-1]["when"] == "end"
    assert all(p["copy_gbs"] > 0 and p["compute_gflops"] > 0 for p in probes)
    drift = ctx["machine_drift"]
    assert drift["probes"] == len(probes) and drift["threshold"] > 0
    spread = 1 - drift["copy_gbs"]["min"] / drift["copy_gbs"]["max"]
    assert drift["copy_gbs"]["spread"] == pytest.approx(spread)
