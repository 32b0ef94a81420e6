"""What the built binary carries: machine code for every GPU generation a user may have (a T4's
sm_75 to Blackwell's, as far as the toolkit knows them) and PTX for the rest, read from the
fat binary's headers (scripts/fatbin.py; cuobjdump is not on these machines)."""
import subprocess
import sys

import pytest

import fatbin
from conftest import ROOT


def test_the_cuda_build_runs_on_every_generation(pairbench):
    code = fatbin.gpu_code(pairbench.exe)
    if not code:
        pytest.skip(f"{pairbench.exe} is a CPU-only build (nvcc not found when it was built)")
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
