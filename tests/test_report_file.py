"""A real quick-suite report: strict JSON, valid against the schema, readable by Google
Benchmark's own compare.py (Debian's libbenchmark-tools)."""
import json
import pathlib
import subprocess
import sys

import pytest

import validate_report

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


def test_a_figure_above_its_ceiling_is_named_by_the_validator(quick_reports):
    doc = validate_report.load_strict(quick_reports[0])
    case = next(c for c in doc["pairbench"]["cases"]
                if c["status"] == "ok" and c["op"] == "gemm" and c["impl"] == "openblas")
    case["gflops"] = 10 * doc["context"]["ceilings"]["cpu"]["fp32"]["bound"]
    found = validate_report.impossible_figures(doc)
    assert len(found) == 1 and found[0].startswith(case["name"] + ": ") and "fp32 ceiling" in found[0]
