"""Fixtures for the pytest half of the suite: the pairbench binary and a real quick-suite run."""
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))


def _binary():
    if os.environ.get("PAIRBENCH_BIN"):
        return pathlib.Path(os.environ["PAIRBENCH_BIN"])
    for preset in ("release", "cpu-only"):
        p = ROOT / "build" / preset / "pairbench"
        if p.exists():
            return p
    pytest.exit("no pairbench binary: run scripts/build or set PAIRBENCH_BIN", returncode=2)


@pytest.fixture(scope="session")
def pairbench():
    exe = _binary()

    def run(*args, env=None, timeout=300):
        return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {})})

    run.exe = exe
    return run


@pytest.fixture(scope="session")
def quick_reports(pairbench, tmp_path_factory):
    """Two real quick-suite reports from this machine (as two runs of CI would make)."""
    out = []
    for i in range(2):
        path = tmp_path_factory.mktemp("reports") / f"quick{i}.json"
        r = pairbench("--suite=quick", f"--report={path}")
        assert r.returncode == 0, r.stderr
        out.append(path)
    return out
