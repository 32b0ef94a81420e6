"""A real quick-suite report: strict JSON, valid against the schema, readable by Google
Benchmark's own compare.py (Debian's libbenchmark-tools)."""
import json
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
