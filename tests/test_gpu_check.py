"""scripts/gpu-check and its verdict (scripts/gpu_verdict.py): what the first person with a GPU
sees, tested here without one: the no-GPU path end to end, and the verdict on reports shaped as
a GPU machine's would be."""
import copy
import json
import os
import shutil
import subprocess
import sys

from conftest import H100_SAMPLE, ROOT
import gpu_verdict
import pbreport

GPU_CONTEXT = {"gpu_available": True, "gpu_name": "NVIDIA H100 80GB HBM3",
               "gpu_compute_capability": "9.0", "gpu_sms": 132, "gpu_memory_bytes": 85e9,
               "cuda_runtime_version": 13000, "cuda_driver_version": 13000,
               "cublas_version": 130000}


def test_without_a_gpu_it_says_why_and_runs_nothing(pairbench):
    # PAIRBENCH_BIN as a path, and relative to the caller's folder (it was taken as the
    # checkout's: "not an executable program").
    exe = pairbench.exe
    for bin_, cwd in ((str(exe), None), (f"{exe.parent.name}/{exe.name}", exe.parent.parent)):
        r = subprocess.run([str(ROOT / "scripts" / "gpu-check")], capture_output=True, text=True,
                           timeout=120, cwd=cwd, env={**os.environ, "PAIRBENCH_BIN": bin_})
        assert r.returncode == 3, r.stdout + r.stderr
        lines = r.stdout.strip().splitlines()
        assert len(lines) == 2 and lines[0].startswith("gpu-check: no usable GPU here (no GPU: ")
        assert lines[0].endswith(")") and lines[0].count("(") == lines[0].count(")"), lines[0]
        assert lines[1] == "gpu-check: verdict: NOT CHECKED (no GPU)"


def gpu_check(*args, **env):
    return subprocess.run([str(ROOT / "scripts" / "gpu-check"), *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **env})


def test_a_program_that_is_not_there_is_bad_input(tmp_path):
    # It was "no usable GPU here .../gpu-check: line 29: /nonexistent: No such file or
    # directory", exit 3.
    for exe in ("/nonexistent", str(tmp_path)):
        r = gpu_check(PAIRBENCH_BIN=exe)
        assert r.returncode == 2 and r.stdout == "", r.stdout + r.stderr
        assert r.stderr.splitlines() == [
            f"gpu-check: error: PAIRBENCH_BIN={exe} is not an executable program"]


def test_a_flag_pairbench_refuses_is_said_before_anything_runs(pairbench, tmp_path):
    r = gpu_check("--bogus", PAIRBENCH_BIN=str(pairbench.exe),
                  PAIRBENCH_RESULTS=str(tmp_path / "results"))
    assert r.returncode == 2 and r.stdout == "", r.stdout + r.stderr
    assert r.stderr.splitlines() == ["gpu-check: error: pairbench --list exited 2: pairbench: "
                                     "error: unknown flag '--bogus' (see --help)"]
    assert not (tmp_path / "results").exists()  # no test program, no suite ran


def test_bad_input_is_refused_before_anything_is_installed_or_built(tmp_path):
    # A copy of the script without scripts/setup or scripts/build beside it: had it tried either
    # first (as it did before 2026-12-07), it would end 127, not with its one line.
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "gpu-check", tmp_path / "scripts")
    env = {k: v for k, v in os.environ.items() if k != "PAIRBENCH_BIN"}
    for args, extra, line in [
            (["--report=r.json"], {}, "gpu-check: error: the report goes to PAIRBENCH_RESULTS "
                                      "(default results/), not --report"),
            ([], {"PAIRBENCH_TEST_TIMEOUT": "0"}, "gpu-check: error: PAIRBENCH_TEST_TIMEOUT=0 "
                                                  "is not a whole number of seconds above 0")]:
        r = subprocess.run([str(tmp_path / "scripts" / "gpu-check"), *args], capture_output=True,
                           text=True, timeout=60, env={**env, **extra})
        assert r.returncode == 2 and r.stdout == "", r.stdout + r.stderr
        assert r.stderr.splitlines() == [line]


def gpu_report(quick_report):
    """A real quick-suite report, its context and GEMM cases made a GPU machine's."""
    doc = json.loads(quick_report.read_text())
    doc["context"].update(GPU_CONTEXT)
    doc["context"].pop("gpu_reason", None)
    for c in doc["pairbench"]["cases"]:
        if c["device"] == "gpu" and c["op"] == "gemm":
            c.update(status="ok", verified=True, impl_detail="")
            c.pop("message", None)
    return doc


def test_every_gpu_case_verified_is_ok(quick_reports):
    doc = gpu_report(quick_reports[0])
    doc["pairbench"]["cases"] = [c for c in doc["pairbench"]["cases"]
                                 if c["device"] == "cpu" or c["op"] == "gemm"]
    lines, code = gpu_verdict.verdict(doc)
    assert code == 0 and lines[-1] == "verdict: OK", lines
    assert lines[0].startswith("GPU: NVIDIA H100 80GB HBM3, compute capability 9.0, 132 SMs")
    # The epoch projection, the CPU's from the quick run's training steps.
    assert any(l.startswith("  one ImageNet-1k epoch, cpu: ") and "samples/s" in l for l in lines)


def test_a_machine_that_changed_speed_is_said_beside_the_speedups(quick_reports):
    # As on a shared H100 VM (2026-11-22): every GPU case right, the CPU's speed moving 10x.
    doc = gpu_report(quick_reports[0])
    doc["pairbench"]["cases"] = [c for c in doc["pairbench"]["cases"]
                                 if c["device"] == "cpu" or c["op"] == "gemm"]
    doc["context"]["machine_drift"] = {
        "threshold": 0.2, "probes": 8, "changed": True,
        "copy_gbs": {"min": 19.25, "max": 113.5, "spread": 0.83},
        "compute_gflops": {"min": 74.3, "max": 996.8, "spread": 0.93}}
    lines, code = gpu_verdict.verdict(doc)
    assert code == 0 and lines[-1] == "verdict: OK", lines
    assert lines[-2] == ("warning: the machine changed speed under the run (STREAM copy "
                         "19.2-113.5 GB/s, compute 74.3-996.8 GFLOP/s over 8 probes): its CPU "
                         "times, and the speedups over them, move with it; run again on a quiet "
                         "machine"), lines
    doc["context"]["machine_drift"]["changed"] = False  # a steady machine: no warning
    assert not any(l.startswith("warning:") for l in gpu_verdict.verdict(doc)[0])


def test_a_failed_or_skipped_gpu_case_fails_the_check(quick_reports):
    doc = gpu_report(quick_reports[0])
    failed = next(c for c in doc["pairbench"]["cases"] if c["device"] == "gpu" and c["op"] == "gemm")
    failed.update(status="error", verified=False, message="verification failed: residual 3")
    lines, code = gpu_verdict.verdict(doc)
    assert code == 1 and lines[-1].startswith("verdict: FAILED (1 GPU case(s) failed"), lines
    assert any(failed["name"] in l and "residual 3" in l for l in lines)
    # The rest of the suite's GPU cases were left skipped in this report: said too.
    assert "skipped" in lines[-1]
    lines, code = gpu_verdict.verdict(gpu_report(quick_reports[0]), tests_failed=2)
    assert code == 1 and "2 GPU test program(s) failed" in lines[-1]


def test_the_verdict_refuses_a_negative_count_of_failed_tests():
    # It printed "verdict: FAILED (-1 GPU test program(s) failed)".
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_verdict.py"), str(H100_SAMPLE),
                        "--tests-failed=-1"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.splitlines() == ["gpu_verdict.py: error: --tests-failed must be a count of "
                                     "programs, 0 or more (see --help)"]


def test_the_verdict_reads_figures_the_validator_held_to_their_times(tmp_path):
    # A GPU GEMM at 1e-12 s, its GFLOP/s as they were, passed the schema and the ceilings.
    doc = json.loads(H100_SAMPLE.read_text())
    case = next(c for c in doc["pairbench"]["cases"] if c["device"] == "gpu" and c["status"] == "ok")
    case["time"].update(median_s=1e-12, repetition_medians_s=[1e-12])
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(doc))
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_verdict.py"), str(path)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == "", r.stdout + r.stderr
    assert r.stderr.startswith(f"gpu_verdict.py: error: {path}: not a valid pairbench report: "
                               f"{case['name']}: gflops ")
    assert len(r.stderr.splitlines()) == 1


def test_no_gpu_in_the_report_is_not_checked(quick_reports):
    lines, code = gpu_verdict.verdict(json.loads(quick_reports[0].read_text()))
    assert code == 3 and lines[-1] == "verdict: NOT CHECKED (no GPU)"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_verdict.py"), "/nonexistent"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1


def test_a_figure_above_the_gpus_ceiling_fails_the_check(quick_reports):
    doc = gpu_report(quick_reports[0])
    doc["pairbench"]["cases"] = [c for c in doc["pairbench"]["cases"]
                                 if c["device"] == "cpu" or c["op"] == "gemm"]
    case = next(c for c in doc["pairbench"]["cases"] if c["device"] == "gpu")
    case.update(status="error", message="impossible: ...",
                above_ceiling={"ceiling": "fp32", "figure": "gflops", "value": 70000.0,
                               "bound": 66900.0, "bound_source": "the peak"})
    lines, code = gpu_verdict.verdict(doc)
    assert code == 1 and "1 GPU figure(s) above the GPU's ceilings" in lines[-1], lines
    assert any(l.startswith(f"  impossible: {case['name']}: 70000.0 above the fp32 ceiling 66900.0")
               for l in lines)


def test_the_verdict_names_each_layer_where_im2col_beat_cudnn():
    # The H100's first run (2026-11-22): im2col + cuBLAS beat cuDNN's choice on 8 of the 21
    # layer-passes both ran, every one at batch 1.
    doc = pbreport.load(H100_SAMPLE)
    lines, _ = gpu_verdict.verdict(doc)
    beat = [l for l in lines if "im2col beat cuDNN" in l]
    assert len(beat) == 8 and all("batch=1," in l for l in beat), beat
    slow = "dir=fwd,batch=1,c=256,h=14,w=14,k=256,r=3,stride=1,pad=1,dtype=fp32"
    assert f"  im2col beat cuDNN on {slow}: 29.5 vs 96.2 us (cuDNN ran winograd_nonfused)" in beat
    # Where the case's detail carries Find's ranking (every run since that one), its time too.
    case = next(c for c in doc["pairbench"]["cases"] if c["name"] == f"conv/gpu/cudnn/{slow}")
    case["impl_detail"] += "; Find: winograd_nonfused 0.031 ms, runner-up algo_1 0.052 ms"
    lines, _ = gpu_verdict.verdict(doc)
    assert any(l.endswith("(cuDNN ran winograd_nonfused; its Find timed it at 31.0 us)")
               for l in lines), lines


def test_without_jsonschema_the_exit_code_still_says_it_all(tmp_path):
    # As on the lent H200, whose python has no jsonschema: a pairbench that sees a GPU and
    # passes, then one whose case fails its check (exit 1).
    for code, expect in ((0, 0), (1, 1)):
        fake = tmp_path / f"pairbench{code}"
        fake.write_text("#!/bin/sh\ncase \"$*\" in *--list*) echo gemm/gpu/cublas/m=8;; "
                        f"*) echo '{{}}' >\"${{3#--report=}}\"; exit {code};; esac\n")
        fake.chmod(0o755)
        python = tmp_path / "python"  # no jsonschema: every -c import fails
        python.write_text("#!/bin/sh\nexit 1\n")
        python.chmod(0o755)
        r = subprocess.run([str(ROOT / "scripts" / "gpu-check")], capture_output=True, text=True,
                           timeout=120,
                           env={**os.environ, "PAIRBENCH_BIN": str(fake),
                                "PAIRBENCH_PYTHON": str(python),
                                "PAIRBENCH_RESULTS": str(tmp_path / "results")})
        assert r.returncode == expect, r.stdout + r.stderr
        assert f"pairbench exited {code}" in r.stdout and "no verdict here" in r.stdout
        assert list((tmp_path / "results").glob("gpu-check-*.json"))  # where it was told


def test_the_verdict_sets_the_copy_in_each_step_beside_the_copy_alone():
    # The H100's first run (2026-11-22): copying the CNN's batch 128 (1.57 MB) added 246 us to
    # its step, where the copy alone takes 29 us at the run's best pinned 54.4 GB/s. Its
    # records predate the copied bytes in the detail: written in here as the step says them.
    doc = pbreport.load(H100_SAMPLE)
    for c in doc["pairbench"]["cases"]:
        if c["impl"].endswith("_h2d"):
            inputs = {"mlp": 784, "cnn": 3 * 32 * 32}[c["shape"]["model"]]
            copied = int(c["shape"]["batch"]) * (inputs + 1) * 4
            c["impl_detail"] = c["impl_detail"].replace("batch copied",
                                                        f"batch ({copied} B) copied")
    lines, _ = gpu_verdict.verdict(doc)
    copies = [l for l in lines if l.startswith("  copy in the step: ")]
    assert len(copies) == 8, copies
    assert ("  copy in the step: cudnn_h2d model=cnn,pass=train,batch=128,dtype=fp32: +246.2 us "
            "for 1.57 MB; alone at 54.4 GB/s: 28.9 us") in copies
