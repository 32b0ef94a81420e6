"""The measurement scripts (scripts/vs_*): a ROUNDS or THREADS that is not a count is one line
naming the script, exit 2, before anything is installed, built or run."""
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

SCRIPTS = {"vs_mpi_allreduce": 1, "vs_numpy": 1, "vs_plain_triad": 2, "vs_ranks": 1,
           "vs_torch": 2, "vs_torch_conv": 2, "vs_torch_train": 2}  # how many counts each takes
CASES = [(s, args) for s, n in SCRIPTS.items()
         for args in (["abc"], ["0"], ["1e3"], ["-1"], ["1001"]) + ((["1", "0"],) if n == 2 else ())]


@pytest.mark.parametrize("script,args", CASES, ids=[f"{s} {' '.join(a)}" for s, a in CASES])
def test_a_bad_count_is_one_line_before_anything_runs(script, args):
    r = subprocess.run([str(ROOT / "scripts" / script), *args], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 2, r.stderr
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    name = "ROUNDS" if len(args) == 1 else "THREADS"
    assert lines == [f"{script}: {name}={args[-1]} is not a count from 1 to 1000"], r.stderr


def vs(script, *args, env=None, timeout=300):
    return subprocess.run([str(ROOT / "scripts" / script), *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


@pytest.mark.skipif(not shutil.which("mpicc"), reason="no mpicc: scripts/setup installs OpenMPI")
def test_vs_mpi_allreduce_sets_the_cpu_case_beside_the_plain_loop(pairbench):
    # Its report lists the GPU's NCCL case (skipped here) before the CPU's: the script had read
    # the first case and printed 0 GB/s for pairbench in every round.
    r = vs("vs_mpi_allreduce", "1",
           env={"PAIRBENCH_BIN": str(pairbench.exe), "SIZES": "65536 262144", "MIN_TIME": "0.05"})
    assert r.returncode == 0, r.stderr
    rows = re.findall(r"^round 1, +(\d+) B: pairbench busbw ([\d.]+) GB/s, plain MPI_Allreduce "
                      r"([\d.]+) GB/s -> ([\d.]+)x$", r.stdout, re.M)
    assert [int(b) for b, *_ in rows] == [65536, 262144], r.stdout
    for _, ours, plain, ratio in rows:
        o, p = float(ours), float(plain)
        assert o > 0 and p > 0, r.stdout
        # The ratio is of the unrounded figures, printed to 0.01; each figure to 0.001 GB/s,
        # which on a loaded VM's small all-reduce (0.1 GB/s) moves their ratio by 1% itself.
        d = 0.0005
        assert (o - d) / (p + d) - 0.005 <= float(ratio) <= (o + d) / max(p - d, 1e-12) + 0.005


@pytest.mark.skipif(not shutil.which("mpirun"), reason="no mpirun: scripts/setup installs OpenMPI")
def test_vs_ranks_prints_both_steps_and_their_efficiency(pairbench):
    r = vs("vs_ranks", "1", "mlp", "8", env={"PAIRBENCH_BIN": str(pairbench.exe), "MIN_TIME": "0.05"})
    assert r.returncode == 0, r.stderr
    m = re.fullmatch(r"round 1, mlp global batch 8: 1 rank ([\d.]+) samples/s, 2 ranks ([\d.]+) "
                     r"samples/s -> efficiency ([\d.]+)\n", r.stdout)
    assert m and float(m[1]) > 0 and float(m[2]) > 0, r.stdout


def test_a_measured_program_that_fails_ends_the_script_saying_so():
    # A pairbench that fails (here: false) is never a figure of 0 beside the other program's.
    r = vs("vs_plain_triad", "1", "1", env={"PAIRBENCH_BIN": shutil.which("false")})
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.splitlines()[-1] == "vs_plain_triad: false exited 1 (its last lines above)"


def test_case_figure_finds_the_case_by_name_never_by_position():
    import case_figure
    doc = {"pairbench": {"cases": [
        {"name": "collective/gpu/nccl/coll=allreduce", "status": "skipped", "message": "no GPU"},
        {"name": "collective/cpu/mpi/coll=allreduce", "status": "ok", "gbs": 3.5},
        {"name": "stream/cpu/omp/kernel=triad,threads=1", "status": "ok", "gbs": 10.0},
        {"name": "stream/cpu/omp/kernel=triad,threads=2", "status": "error", "message": "off by 1"},
        {"name": "stream/cpu/omp/kernel=copy,threads=2", "status": "ok", "gbs": 9.0,
         "gflops": 0.0}]}}
    assert case_figure.figure(doc, "collective/cpu/mpi/", "gbs") == 3.5
    for prefix, field, why in [
            ("collective/gpu/", "gbs", "collective/gpu/nccl/coll=allreduce was skipped: no GPU"),
            ("stream/cpu/omp/kernel=triad,threads=2", "gbs", "threads=2 failed: off by 1"),
            ("stream/", "gbs", "3 cases named stream/... in the report"),
            ("gemm/", "gbs", "0 cases named gemm/... in the report, where one was expected"),
            ("collective/cpu/", "gflops", "collective/cpu/mpi/coll=allreduce has no gflops"),
            # a copy counts no FLOPs: its 0 GFLOP/s had been printed as a figure
            ("stream/cpu/omp/kernel=copy", "gflops", "gflops is 0.0: not a figure it measures")]:
        with pytest.raises(ValueError, match=re.escape(why)):
            case_figure.figure(doc, prefix, field)


def test_case_figure_on_a_report_prints_the_figure_or_one_line(tmp_path):
    sample = ROOT / "reports" / "samples" / "quick-cpu-only.json"
    script = [sys.executable, str(ROOT / "scripts" / "case_figure.py")]
    r = subprocess.run([*script, str(sample), "stream/cpu/omp/kernel=dot,", "gbs"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and float(r.stdout) > 0, r.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    r = subprocess.run([*script, str(bad), "stream/", "gbs"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.splitlines()) == 1 and "not JSON" in r.stderr
    # A flag of the case is no figure: cache_resident had printed "True".
    r = subprocess.run([*script, str(sample), "stream/cpu/omp/kernel=dot,", "cache_resident"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stdout == "" and "has no cache_resident" in r.stderr
    r = subprocess.run([*script, "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("usage: case_figure.py")


@pytest.mark.parametrize("script, args, says", [
    ("fit_normal_tail.py", ["--degree", "-1"], "--degree -1: a whole number from 1 to 12"),
    ("fit_normal_tail.py", ["--xmax", "nan"], "--xmax nan: a number from 1 to below 23"),
    ("numpy_gemm.py", ["--min-time", "inf"], "--min-time inf: seconds above 0, at most 3600"),
])
def test_the_helpers_refuse_values_they_cannot_use(script, args, says):
    # They ended in a traceback, printed NaN constants, or never ended (--min-time inf).
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / script), *args],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stdout == "", r.stdout + r.stderr
    assert r.stderr.splitlines()[-1] == f"{script}: error: {says}"
