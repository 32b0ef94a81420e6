"""What the build carries: machine code for every GPU generation a user may have (a T4's sm_75
to Blackwell's, as far as the toolkit knows them) and PTX for the rest, read from the fat
binary's headers (scripts/fatbin.py; cuobjdump is not on these machines); a program that links
no CUDA library and runs its CPU cases where the GPU part cannot load; a CPU-only build on a GPU
machine refused with the fix."""
import os
import subprocess
import sys

import pytest

import fatbin
import validate_report
from conftest import ROOT


def test_the_cuda_build_runs_on_every_generation(pairbench):
    gpu_part = pairbench.exe.parent / "libpairbench_gpu.so"  # the program loads it on first use
    if not gpu_part.exists():
        pytest.skip(f"{pairbench.exe} is a CPU-only build (nvcc not found when it was built)")
    code = fatbin.gpu_code(gpu_part)
    machine = {arch for kind, arch in code if kind == "elf"}
    assert {75, 80, 86, 89, 90} <= machine, code  # Turing, Ampere, Ada, Hopper
    assert ("ptx", 90) in code, "PTX for GPUs newer than the machine code"


def test_fatbin_lists_a_cpu_only_binary_as_such(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "fatbin.py"), sys.executable],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "no GPU code" in r.stderr
    not_elf = tmp_path / "x"
    not_elf.write_text("hello")
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "fatbin.py"), str(not_elf)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "not a 64-bit ELF" in r.stderr


def test_the_program_links_no_cuda_library(pairbench):
    ldd = subprocess.run(["ldd", str(pairbench.exe)], capture_output=True, text=True).stdout
    assert ldd and not any(lib in ldd for lib in ("libcudart", "libcublas", "libcuda.so"))


def test_cpu_cases_run_where_the_gpu_library_cannot_load(pairbench, tmp_path):
    report = tmp_path / "r.json"
    r = pairbench("--ops=gemm", "--shape=m=64,n=64,k=64", "--dtypes=fp32", f"--report={report}",
                  "--benchmark_min_time=0.01",
                  env={"PAIRBENCH_GPU_MODULE": str(tmp_path / "missing" / "libpairbench_gpu.so")})
    assert r.returncode == 0, r.stderr
    doc = validate_report.load_strict(report)
    cases = doc["pairbench"]["cases"]
    assert all(c["status"] == "ok" for c in cases if c["device"] == "cpu")
    gpu = [c for c in cases if c["device"] == "gpu"]
    assert gpu and all(c["status"] == "skipped" for c in gpu)
    if "built without CUDA" not in doc["context"]["gpu_reason"]:
        assert "libpairbench_gpu.so) was not found" in doc["context"]["gpu_reason"]
        assert str(tmp_path / "missing") in gpu[0]["message"]


def test_a_cpu_only_build_on_a_gpu_machine_is_an_error_with_the_fix(pairbench):
    cpu_only = ROOT / "build" / "cpu-only" / "pairbench"
    if not cpu_only.exists():
        pytest.skip("no CPU-only build (scripts/test makes one)")
    fake = {"PAIRBENCH_FAKE_NVIDIA_DEVICE": "1"}  # as if /dev/nvidia0 were there
    r = subprocess.run([str(cpu_only), "--suite=quick", "--list"], capture_output=True, text=True,
                       env={**os.environ, **fake})
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert "NVIDIA GPU" in lines[0] and "scripts/setup" in lines[0] and "--devices=cpu" in lines[0]
    ok = subprocess.run([str(cpu_only), "--suite=quick", "--list", "--devices=cpu"],
                        capture_output=True, text=True, env={**os.environ, **fake})
    assert ok.returncode == 0, ok.stderr
