"""scripts/bundle (pairbench for a machine that cannot install anything) and scripts/gpu-targets
(the GPU checks of the open issues under a time budget), tested here without a GPU: the bundle
runs from another folder on its own libraries, finds CUDA's where a machine keeps them (the
system's, PAIRBENCH_CUDA_LIBS, the nvidia-* wheels of python3's site-packages), and its GPU test
programs run; gpu-targets says why it cannot run, skips what its budget cannot hold and rejects
bad usage; the scripts it runs say what broke (vs_torch_train, torch_venv)."""
import os
import shutil
import subprocess

import pytest

from conftest import ROOT

BUNDLE = ROOT / "scripts" / "bundle"


@pytest.fixture(scope="module")
def bundle(pairbench, tmp_path_factory):
    """A bundle of the binary under test, moved after it was made (so nothing in it may lean
    on where it was built)."""
    made = tmp_path_factory.mktemp("made") / "pairbench"
    r = subprocess.run([str(BUNDLE), str(made)], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PAIRBENCH_BIN": str(pairbench.exe)})
    assert r.returncode == 0, r.stderr
    moved = tmp_path_factory.mktemp("moved") / "pb"
    shutil.move(str(made), str(moved))
    return moved


def in_bundle(bundle, script, env=None):
    """What a shell that sources the bundle's env.sh sees after running script."""
    return subprocess.run(["sh", "-c", f'here="{bundle}"; . "$here/env.sh"; {script}'],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def script(path, body):
    """An executable shell script at path."""
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def test_the_bundle_runs_on_its_own_libraries_from_anywhere(bundle):
    r = subprocess.run([str(bundle / "pairbench"), "--suite=quick", "--list"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "gemm/cpu/openblas/" in r.stdout
    r = in_bundle(bundle, 'ldd "$here/libexec/pairbench"')
    lines = {l.split()[0]: l for l in r.stdout.splitlines() if "=>" in l}
    assert "not found" not in r.stdout
    for lib in ("libdnnl.so.3", "libopenblas.so.0", "libbenchmark.so.1debian"):
        assert str(bundle / "lib" / lib) in lines[lib], lines.get(lib)
    manifest = (bundle / "MANIFEST").read_text()
    assert "libdnnl.so.3" in manifest and "commit: " in manifest
    # CUDA's libraries come from the machine, never from the bundle.
    assert not any(p.name.startswith(("libcudart", "libcublas", "libcudnn"))
                   for p in (bundle / "lib").iterdir())


def test_the_gpu_test_programs_run_from_the_bundle(bundle):
    tests = sorted((bundle / "tests").iterdir())
    if not (bundle / "libexec" / "libpairbench_gpu.so").exists():
        assert tests == []  # a build without CUDA has none
        pytest.skip("this build has no GPU part (built without CUDA)")
    assert {t.name for t in tests} >= {"test_train_gpu", "test_conv_gpu", "test_gemm_gpu"}
    r = subprocess.run([str(bundle / "tests" / "test_gemm_gpu"), "--gtest_brief=1"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr  # on a machine without a GPU: skipped


def test_cuda_libraries_are_found_where_a_machine_keeps_them(bundle, tmp_path):
    (bundle / "machine-libs").write_text("libpbtest_a.so.1\nlibpbtest_b.so.2\nlibpbtest_c.so.3\n")
    given = tmp_path / "given"
    given.mkdir()
    (given / "libpbtest_a.so.1").write_bytes(b"")
    wheel = tmp_path / "site" / "nvidia" / "cu13" / "lib"  # as PyPI's nvidia-* wheels lay out
    wheel.mkdir(parents=True)
    (wheel / "libpbtest_b.so.2").write_bytes(b"")
    fake = tmp_path / "bin"
    fake.mkdir()
    script(fake / "python3", f"echo {tmp_path / 'site'}\n")  # its site-packages
    r = in_bundle(bundle, 'echo "$LD_LIBRARY_PATH"',
                  env={"PATH": f"{fake}:{os.environ['PATH']}", "PAIRBENCH_CUDA_LIBS": str(given),
                       "LD_LIBRARY_PATH": "/before"})
    assert r.returncode == 0, r.stderr
    dirs = r.stdout.strip().split(":")
    assert dirs == [str(bundle / "lib"), str(given), str(wheel), "/before"], dirs
    # libpbtest_c is nowhere: said on a machine with a GPU only, and never fatal.
    assert ("not found on this machine: libpbtest_c.so.3" in r.stderr) == os.path.exists(
        "/dev/nvidia0")


@pytest.mark.parametrize("args,message", [
    (["--zip"], "unknown option --zip"),
    (["a", "b"], "usage: scripts/bundle"),
])
def test_bundle_rejects_bad_usage(args, message):
    r = subprocess.run([str(BUNDLE), *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.splitlines()) == 1


def test_bundle_will_not_replace_a_folder_that_is_not_a_bundle(pairbench, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    r = subprocess.run([str(BUNDLE), str(tmp_path / "mine")], capture_output=True, text=True,
                       timeout=60, env={**os.environ, "PAIRBENCH_BIN": str(pairbench.exe)})
    assert r.returncode == 2 and "is not a bundle" in r.stderr
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def cpu_flags():
    with open("/proc/cpuinfo") as f:
        return next(l for l in f if l.startswith("flags")).split(":", 1)[1].split()


def test_the_bundle_says_which_cpu_its_code_needs(bundle, pairbench):
    # What the build's -march lets the compiler emit, as /proc/cpuinfo names it: all of it this
    # machine's (the build's own), none of AVX-512 in an AVX2 build (the CPU-only one).
    needs = (bundle / "cpu-needs").read_text().split()
    assert "avx2" in needs and "fma" in needs and not any(f.startswith("amx") for f in needs)
    assert set(needs) <= set(cpu_flags())
    march = (bundle / "cpu-march").read_text().strip()
    cache = (pairbench.exe.parent / "CMakeCache.txt").read_text()
    assert f"PAIRBENCH_MARCH:STRING={march.removeprefix('-march=')}" in cache
    if march == "-march=x86-64-v3":
        assert not any(f.startswith("avx512") for f in needs), needs
    assert f"cpu: {march}, needs {' '.join(needs)}" in (bundle / "MANIFEST").read_text()


def test_a_cpu_without_what_the_bundle_needs_is_one_line_not_an_illegal_instruction(bundle,
                                                                                      tmp_path):
    copy = tmp_path / "pb"
    shutil.copytree(bundle, copy, symlinks=True)
    with open(copy / "cpu-needs", "a") as f:
        f.write("avx1024_fantasy\n")
    r = subprocess.run([str(copy / "pairbench"), "--help"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and r.stdout == "", r.stdout + r.stderr
    assert r.stderr.splitlines() == [
        f"pairbench bundle: built with {(copy / 'cpu-march').read_text().strip()} for a CPU with "
        "avx1024_fantasy, which this one lacks (it would die of an illegal instruction): bundle a "
        "build that runs here (scripts/build release -DPAIRBENCH_MARCH=x86-64-v3, then "
        "scripts/bundle)"], r.stderr


def test_gpu_targets_without_a_gpu_says_why_and_stops(pairbench, tmp_path):
    if os.path.exists("/dev/nvidia0"):
        pytest.skip("this machine has a GPU")
    r = subprocess.run([str(ROOT / "scripts" / "gpu-targets"), str(tmp_path / "out"), "60"],
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PAIRBENCH_BIN": str(pairbench.exe)})
    assert r.returncode == 3, r.stdout + r.stderr
    log = (tmp_path / "out" / "gpu-targets.log").read_text()
    assert "no usable GPU" in log and "ResNet-50" not in log


@pytest.mark.parametrize("args,message", [
    ([], "usage: scripts/gpu-targets OUT [SECONDS]"),
    (["out", "ten"], "SECONDS must be a whole number"),
])
def test_gpu_targets_rejects_bad_usage(args, message, tmp_path):
    r = subprocess.run([str(ROOT / "scripts" / "gpu-targets"), *args], capture_output=True,
                       text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 2 and message in r.stderr, r.stderr


def test_gpu_targets_skips_what_its_budget_cannot_hold(tmp_path):
    # A pairbench that sees a GPU, and a budget too small for any step: each is said skipped.
    fake = script(tmp_path / "pairbench", "echo gemm/gpu/cublas/m=256,n=256,k=256,dtype=fp32\n")
    r = subprocess.run([str(ROOT / "scripts" / "gpu-targets"), str(tmp_path / "out"), "20"],
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PAIRBENCH_BIN": str(fake)})
    assert r.returncode == 0, r.stdout + r.stderr
    log = (tmp_path / "out" / "gpu-targets.log").read_text()
    for step in ("gpu-check", "ResNet-50 bf16 vs torch", "ResNet-50 fp32", "compute-sanitizer"):
        assert f"{step}" in log and "left of the budget" in log, log
    assert log.count(": skipped (") == 7 and "done: every step that ran passed" in log


def test_gpu_targets_stops_on_a_bundle_of_another_commit(tmp_path):
    # The GPU machine gets the files without .git: the commit the caller expects is the check.
    fake = script(tmp_path / "pairbench", "echo gemm/gpu/cublas/m=256,n=256,k=256,dtype=fp32\n")
    (tmp_path / "MANIFEST").write_text("pairbench bundle\ncommit: 335a23a\n")

    def run(want):
        return subprocess.run([str(ROOT / "scripts" / "gpu-targets"), str(tmp_path / "out"), "20"],
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PAIRBENCH_BIN": str(fake),
                                   "PAIRBENCH_EXPECT_COMMIT": want})
    r = run("52b68b3")
    assert r.returncode == 2, r.stdout + r.stderr
    assert ("the bundle was made at 335a23a, not at PAIRBENCH_EXPECT_COMMIT=52b68b3: run "
            "scripts/bundle --tar again; nothing run") in r.stdout
    r = run("335a23a9")  # the same commit, a longer hash
    assert r.returncode == 0 and "done: every step that ran passed" in r.stdout, r.stdout


def test_gpu_targets_stops_where_pairbench_cannot_start(tmp_path):
    # A bundle built for another CPU: its launcher's line, and no step run on a lent GPU.
    fake = script(tmp_path / "pairbench",
                  "echo 'pairbench bundle: built with -march=native for a CPU with avx512_fp16, "
                  "which this one lacks' >&2\nexit 2\n")
    r = subprocess.run([str(ROOT / "scripts" / "gpu-targets"), str(tmp_path / "out"), "20"],
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PAIRBENCH_BIN": str(fake)})
    assert r.returncode == 2, r.stdout + r.stderr
    assert "pairbench cannot run here: pairbench bundle: built with -march=native for a CPU " \
           "with avx512_fp16, which this one lacks; nothing run" in r.stdout
    assert "gpu-check" not in r.stdout


def vs_torch_train(tmp_path, pairbench_body, python_body, **env):
    """scripts/vs_torch_train on the MLP, one round, with a fake pairbench and a fake python
    that has torch as far as the script asks (python_body None: a python without torch)."""
    torch_python = "/bin/false" if python_body is None else str(script(tmp_path / "python",
                                                                       python_body))
    return subprocess.run([str(ROOT / "scripts" / "vs_torch_train"), "1", "1", "mlp"],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ,
                               "PAIRBENCH_BIN": str(script(tmp_path / "pairbench", pairbench_body)),
                               "PAIRBENCH_TORCH_PYTHON": torch_python, **env})


TORCH_JSON = ('{"torch": "2.15.0", "threads": 1, "dtype": "fp32", "device": "cpu", '
              '"train_ms": {"32": 4.0, "128": 9.0}, "infer_ms": {"32": 1.0, "128": 2.0}}')


REPORT_AND_CRASH = ('for a; do case $a in --report=*) r=${a#--report=}; '
                    'echo \'{"pairbench": {"cases": []}}\' >"$r.partial.jsonl";; esac; done\n'
                    'echo "pairbench: CUDA error: an illegal memory access" >&2\nexit 134\n')


def test_vs_torch_train_keeps_pairbenchs_log_and_stderr_where_asked(tmp_path):
    # On a GPU lent for one call, the first round's report (or the partial log of a round cut
    # short) and everything pairbench said must outlive the script's temporary folder.
    keep = tmp_path / "keep"
    r = vs_torch_train(tmp_path, REPORT_AND_CRASH, f"[ \"$1\" = -c ] && exit 0\necho '{TORCH_JSON}'\n",
                       PAIRBENCH_KEEP=str(keep))
    assert r.returncode == 1, r.stdout + r.stderr
    assert sorted(p.name for p in keep.iterdir()) == [
        "pairbench-cpu-fp32-round1.err", "pairbench-cpu-fp32-round1.json.partial.jsonl"]
    assert "illegal memory access" in (keep / "pairbench-cpu-fp32-round1.err").read_text()
    assert "pairbench exited 134 in round 1" in r.stderr and "illegal memory access" in r.stderr


def test_vs_torch_train_runs_pairbench_where_torch_is_missing(tmp_path):
    # A machine whose torch cannot be found or installed still gets pairbench's figures.
    report = ('{"context": {}, "pairbench": {"analyses": {}, "cases": [{"name": "train/cpu/onednn/'
              'model=mlp,batch=32", "status": "ok", "time": {"median_s": 0.004}}]}}')
    r = vs_torch_train(tmp_path, 'for a; do case $a in --report=*) '
                                 f'echo \'{report}\' >"${{a#--report=}}";; esac; done\n', None)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "no torch here" in r.stderr
    assert "round 1: pairbench train/cpu/onednn/model=mlp,batch=32: 4.00 ms" in r.stdout


def test_vs_torch_train_says_when_pairbench_broke(tmp_path):
    # A pairbench that dies without a report: its last words and exit 1, not a traceback.
    r = vs_torch_train(tmp_path, "echo 'pairbench: error: the GPU fell off' >&2\nexit 1\n",
                       "exit 0\n")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "pairbench exited 1 in round 1" in r.stderr and "the GPU fell off" in r.stderr


def test_vs_torch_train_runs_torch_when_pairbench_broke(tmp_path):
    # torch's half still runs and its figures are printed: on a GPU lent for minutes they are
    # worth having though pairbench's never-run step crashed.
    r = vs_torch_train(tmp_path, "echo 'pairbench: error: the GPU fell off' >&2\nexit 134\n",
                       f"[ \"$1\" = -c ] && exit 0\necho '{TORCH_JSON}'\n")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "pairbench exited 134 in round 1" in r.stderr and "the GPU fell off" in r.stderr
    assert "round 1: torch mlp train batch 32: 4.00 ms" in r.stdout
    assert "no round has pairbench's figures" in r.stderr


def test_vs_torch_train_sums_up_a_round_whose_every_case_failed_its_check(tmp_path):
    # pairbench's exit 1 with a report: each case's failure said, torch's figures printed, the
    # summary made without a case to set beside torch's (it had ended in a NameError), exit 1.
    report = ('{"context": {"cpu_model": "x", "cpu_logical_cores": 1}, "pairbench": {'
              '"analyses": {}, "cases": [{"name": "train/cpu/onednn/model=mlp,batch=32", '
              '"status": "error", "message": "step off by 3%"}]}}')
    r = vs_torch_train(tmp_path, 'for a; do case $a in --report=*) '
                                 f'echo \'{report}\' >"${{a#--report=}}";; esac; done\nexit 1\n',
                       f"[ \"$1\" = -c ] && exit 0\necho '{TORCH_JSON}'\n")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "round 1: pairbench train/cpu/onednn/model=mlp,batch=32: error" in r.stdout
    assert "round 1: train/cpu/onednn/model=mlp,batch=32 error: step off by 3%" in r.stdout
    assert "round 1: torch mlp train batch 128: 9.00 ms" in r.stdout
    assert "torch 2.15.0 (1 threads, fp32, cpu)" in r.stdout


def test_vs_torch_train_says_when_torch_broke(tmp_path):
    # pairbench's round done (a report with no cases), torch's half failing: torch's last words.
    r = vs_torch_train(tmp_path, 'for a; do case $a in --report=*) '
                                 'echo \'{"pairbench": {"cases": []}}\' >"${a#--report=}";; esac; done\n',
                       '[ "$1" = -c ] && exit 0\necho "CUDA out of memory" >&2\nexit 1\n')
    assert r.returncode == 1, r.stdout + r.stderr
    assert "torch's mlp failed in round 1" in r.stderr and "CUDA out of memory" in r.stderr


def test_torch_venv_refuses_a_python_without_torch():
    r = subprocess.run([str(ROOT / "scripts" / "torch_venv")], capture_output=True, text=True,
                       timeout=60, env={**os.environ, "PAIRBENCH_TORCH_PYTHON": "/bin/false"})
    assert r.returncode == 2 and "cannot import torch and torchvision" in r.stderr, r.stderr
