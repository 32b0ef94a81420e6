"""The measurement scripts (scripts/vs_*): a ROUNDS or THREADS that is not a count is one line
naming the script, exit 2, before anything is installed, built or run."""
import subprocess

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
