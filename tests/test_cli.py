"""The pairbench command line: bad input exits 2 with one clear line and writes nothing; a
failed verification is an error entry and exit 1; an interrupted run can be recovered."""
import json
import os
import re
import signal
import subprocess
import time

import pytest

import validate_report
from conftest import ROOT

BAD_INPUTS = [
    (["--frobnicate"], "unknown flag '--frobnicate' (see --help)"),
    (["--thread=2"], "unknown flag '--thread=2' (did you mean --threads?)"),
    (["--dtype=bf16"], "(did you mean --dtypes?)"),
    (["--out=x.json"], "unknown flag '--out=x.json' (did you mean --report?)"),
    (["--suite=huge"], "unknown suite"),
    (["--devices=tpu"], "'tpu' is not a device (cpu, gpu)"),
    (["--threads=0"], "'0' is not a thread count from 1 to 1024"),
    (["--threads=1,,2"], "empty item"),
    (["--dtypes=fp64"], "'fp64' is not a dtype"),
    (["--ops=conv9d"], "unknown op"),
    (["--impls=magic"], "unknown implementation"),
    (["--ops=gemm", "--shape=m=0,n=8,k=8"], "must be at least 1"),
    (["--ops=gemm", "--shape=m=-8,n=8,k=8"], "must be at least 1"),
    (["--ops=gemm", "--shape=m=99999999999999999999999,n=8,k=8"], "exceeds"),
    (["--ops=gemm", "--shape=m=8x,n=8,k=8"], "not an integer"),
    (["--ops=gemm", "--shape=m=4294967296,n=8,k=8"], "exceeds"),
    (["--ops=gemm", "--shape=m=8,n=8"], "needs m, n and k"),
    (["--ops=gemm", "--shape=m=200000,n=200000,k=200000"], "host memory"),
    (["--ops=stream", "--shape=kernel=triad,n=0"], "must be at least 1"),
    (["--ops=stream", "--shape=kernel=triad,n=18446744073709551616"], "exceeds"),
    (["--ops=stream", "--shape=kernel=triad,n=1099511627776"], "host memory"),
    (["--ops=stream", "--shape=kernel=fma,n=8"], "kernel=fma"),
    (["--ops=transfer", "--shape=dir=h2d,bytes=6", "--devices=gpu"], "multiple of 4"),
    (["--shape=m=8,n=8,k=8"], "--shape needs --ops"),
    (["--ops=activation", "--shape=fn=swish,n=8"], "fn=swish"),
    (["--ops=activation", "--shape=fn=relu,n=0"], "must be at least 1"),
    (["--ops=activation", "--shape=fn=relu,n=1099511627776"], "host memory"),
    (["--ops=softmax", "--shape=rows=0,cols=8"], "must be at least 1"),
    (["--ops=loss", "--shape=rows=8,cols=8,dir=sideways"], "dir=sideways"),
    (["--ops=conv", "--shape=batch=1,c=3,h=5,w=5,k=2,r=7"], "larger than the padded"),
    (["--ops=conv", "--shape=batch=1,c=3,h=5,w=5,k=2,r=8,pad=1"], "larger than the padded"),
    (["--ops=conv", "--shape=batch=0,c=3,h=5,w=5,k=2,r=3"], "must be at least 1"),
    (["--ops=conv", "--shape=batch=1,c=-3,h=5,w=5,k=2,r=3"], "must be at least 1"),
    (["--ops=conv", "--shape=batch=1,c=3,h=5,w=5,k=2,r=3,stride=0"], "must be at least 1"),
    (["--ops=conv", "--shape=batch=1,c=3,h=5,w=5,k=2,r=3,dir=up"], "dir=up"),
    (["--ops=conv", "--shape=batch=1,c=3,h=5,w=5,k=2"], "needs r"),
    (["--ops=conv", "--shape=batch=4096,c=1024,h=512,w=512,k=64,r=3,pad=1"], "host memory"),
    (["--ops=train", "--shape=model=resnet,batch=1,image=30"], "multiple of 4"),
    (["--ops=train", "--shape=model=cnn,batch=1,image=64"], "image= is for model=resnet"),
    (["--ops=train", "--shape=model=vgg,batch=1"], "model=vgg"),
    (["--ops=train", "--shape=model=mlp,batch=8,grads=local"], "grads=local is for a run of several"),
    (["--ops=train", "--shape=model=mlp,batch=8,ranks=2"], "ranks=2 but this run has 1"),
    (["--ops=train", "--shape=model=resnet,batch=100000"], "host memory"),
    (["--report=/nonexistent-dir/r.json", "--suite=quick"], "folder /nonexistent-dir/ does not exist"),
    (["--report=/tmp", "--suite=quick"], "is a directory"),
    (["--recover=/nonexistent.partial.jsonl"], "cannot read"),
    (["--openblas-core=prescott"], "--openblas-core: unknown value"),
    (["--openblas-core"], "--openblas-core needs a value"),
    (["--price=cpu=-1"], "not a price in USD per hour"),
    (["--price=cpu=cheap"], "not a price in USD per hour"),
    (["--price=cpu=nan"], "not a price in USD per hour"),
    (["--price=cpu=1e999"], "not a price in USD per hour"),
    (["--price=tpu=2"], "is not cpu=USD_PER_HOUR or gpu=USD_PER_HOUR"),
    (["--price=2.5"], "is not cpu=USD_PER_HOUR or gpu=USD_PER_HOUR"),
    (["--busbw=cpu=0"], "is not a bus bandwidth in GB/s (a number > 0 and at most 1e6)"),
    (["--busbw=gpu=fast"], "is not a bus bandwidth in GB/s"),
    (["--busbw=100"], "is not cpu=GBPS or gpu=GBPS"),
    (["--price=cpu=1,,gpu=2"], "--price: empty item"),
    (["--price"], "--price needs a value"),
    (["--price=cpu=1e308"], "at most 1e6"),
    (["--busbw=gpu=1e9"], "at most 1e6"),
    (["--help=foo"], "--help takes no value"),
    (["--v=abc"], "is not a verbosity level"),
    # Google Benchmark's flags: values it would print its help and exit 0 for, or run nothing
    # with, are bad input before it sees them.
    (["--benchmark_format=foo"], "'foo' is not one of console, json, csv"),
    (["--benchmark_out_format=xml"], "'xml' is not one of console, json, csv"),
    (["--benchmark_time_unit=x"], "'x' is not one of ns, us, ms, s"),
    (["--benchmark_repetitions=-1"], "is not a count of repetitions"),
    (["--benchmark_repetitions=0"], "is not a count of repetitions"),
    (["--benchmark_min_time=abc"], "is not a number of seconds above 0"),
    (["--benchmark_min_time=0"], "is not a number of seconds above 0"),
    (["--benchmark_filter=["], "is not a regular expression"),
    (["--benchmark_list_tests=true"], "--list lists the cases"),
    (["--benchmark_color=maybe"], "'maybe' is not auto, true or false"),
    (["--benchmark_counters_tabular=sometimes"], "'sometimes' is not true or false"),
    (["--benchmark_out=/nonexistent-dir/x.json"], "folder /nonexistent-dir/ does not exist"),
    (["--benchmark_repetitions=2", "--benchmark_repetitions=3"], "is given twice"),
    (["--ops=gemm", "--shape=m=8,n=8,k=8", "--benchmark_filter=nomatch"], "selects none"),
    # A flag given twice, a shape key given twice, keys that would fight over one value.
    (["--ops=gemm", "--ops=conv"], "--ops is given twice"),
    (["--ops=gemm", "--shape=m=8,n=8,k=8,m=4"], "'m' is given twice"),
    (["--ops=conv", "--shape=batch=1,c=3,h=5,w=5,k=2,r=3,stride=1,stride_h=2"],
     "give one or the other"),
    (["--ops=conv", "--shape=batch=1,c=3,h=5,w=5,k=2,r=3,pad=-1"], "pad=-1 must be at least 0"),
    # The training step's shape: a model always, the update's numbers in range, none for
    # inference.
    (["--ops=train", "--shape=batch=1"], "needs model= and batch="),
    (["--ops=train", "--shape=model=resnet50,batch=1,image=0"], "image=0 must be at least 8"),
    (["--ops=train", "--shape=model=resnet50,batch=1,image=16"],
     "batch norm layer3.0.bn2 would see 1 value a channel"),
    (["--ops=train", "--shape=model=mlp,batch=4,lr=0"], "not a learning rate above 0"),
    (["--ops=train", "--shape=model=mlp,batch=4,lr=1e10"], "not a learning rate above 0"),
    (["--ops=train", "--shape=model=mlp,batch=4,momentum=2"], "not a momentum from 0"),
    (["--ops=train", "--shape=model=mlp,batch=4,weight_decay=-1"], "not a weight decay from 0"),
    (["--ops=train", "--shape=model=mlp,batch=4,lr=0.1,pass=infer"], "pass=infer has none"),
    # Flags that leave no case say which one did it, and what the others would choose.
    (["--ops=gemm", "--dtypes=bf16", "--impls=cpu/openblas"],
     "without --dtypes they choose cases of fp32"),
    (["--ops=gemm", "--impls=gpu/cublas"], "without --impls they choose cases of cpu/"),
    (["--ops=gemm", "--dtypes=bf16", "--impls=cpu/openblas", "--list"],
     "without --dtypes they choose cases of fp32"),
    # --recover runs nothing: selection flags do not go with it, nor a report over its log.
    (["--recover=/nonexistent.partial.jsonl", "--ops=gemm"], "--ops does not go with it"),
    (["--recover=/tmp/x.partial.jsonl", "--report=/tmp/x.partial.jsonl"],
     "would overwrite the log"),
    (["--recover=/tmp"], "is a directory"),
    (["--recover=/nonexistent.partial.jsonl", "--benchmark_filter=gemm"],
     "--benchmark_filter does not go with it"),
    (["--price=cpu=1,cpu=2"], "cpu is given twice"),
    (["--ops=gemm", "--shape=m=8,n=8,k=8,alpha=3e38"], "could overflow fp32"),
    (["--ops=gemm", "--shape=m=8,n=8,k=8,alpha=1e-50"], "below fp32's smallest value"),
    # What the user typed is echoed on the one line, its control characters escaped.
    (["--ops=gemm\nconv"], "unknown op 'gemm\\x0aconv'"),
    # --list lists what the filter runs, and a filter that runs nothing is an error there too.
    (["--ops=gemm", "--shape=m=8,n=8,k=8", "--list", "--benchmark_filter=nomatch"], "selects none"),
    # Flags that chose only what this machine cannot run: a collective on one rank.
    (["--ops=collective", "--shape=coll=allreduce,bytes=4096"],
     "every case the flags chose is skipped on this machine ("),
    (["--v=2.5"], "'2.5' is not a verbosity level"),
]

# Bad input on a machine where OpenBLAS picked a fallback core (made here with the test hook,
# whatever this machine's CPU) still prints exactly one line: the notes come once the arguments
# are valid.
FALLBACK = {"PAIRBENCH_FAKE_OPENBLAS_CORE": "Prescott"}
# Some machines set OPENBLAS_CORETYPE in everyone's environment (one Zen 5 VM: Haswell). No test
# sets, changes or unsets it; where it is set, OpenBLAS detects nothing, so the fallback cannot be
# made, and the user's choice must win: the restart's decisions are tested as a pure function in
# test_core.cpp on every machine.
USER_CORE = os.environ.get("OPENBLAS_CORETYPE", "")


def _assert_the_users_core_is_kept(ctx, stderr):
    """OPENBLAS_CORETYPE from the environment wins over OpenBLAS's detection, faked or not."""
    assert ctx["openblas_core_source"] == "user", ctx
    assert ctx["openblas_coretype_env"] == USER_CORE
    assert ctx["openblas_core_detected"] == "unknown (OPENBLAS_CORETYPE was set)"
    assert "restarted itself" not in stderr


@pytest.mark.parametrize("args,message", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
@pytest.mark.parametrize("env", [None, FALLBACK], ids=["as-is", "fallback-core"])
def test_bad_input_exits_2_with_one_line(pairbench, tmp_path, args, message, env):
    extra = [] if any(a.startswith(("--devices", "--recover")) for a in args) else ["--devices=cpu"]
    r = pairbench(*args, *extra, env=env)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr
    assert len(lines) == 1 and lines[0].startswith("pairbench: error:"), r.stderr
    assert message in lines[0]
    assert r.stdout == ""


GEMM = ("--ops=gemm", "--devices=cpu", "--impls=omp", "--dtypes=fp32", "--shape=m=8,n=8,k=8",
        "--benchmark_min_time=0.01")


def _refused(r, message):
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr
    assert len(lines) == 1 and lines[0].startswith("pairbench: error:") and message in lines[0], r.stderr


def test_the_report_replaces_nothing_but_a_file(pairbench, tmp_path):
    """--report=/dev/null replaced /dev/null with a file (the report goes in by a rename)."""
    fifo, target, link = tmp_path / "fifo.json", tmp_path / "target.json", tmp_path / "link.json"
    os.mkfifo(fifo)
    target.write_text("{}")
    link.symlink_to(target)
    _refused(pairbench(*GEMM, f"--report={fifo}"), "is a device, pipe or socket")
    assert fifo.is_fifo()
    _refused(pairbench(*GEMM, f"--report={link}"), "is a symbolic link")
    assert link.is_symlink() and target.read_text() == "{}"


def test_a_run_cut_short_keeps_its_log_from_the_next_run(pairbench, tmp_path):
    """The log of a run cut short is the only copy of its cases: the next run at the same
    --report refuses rather than deleting it, and --recover still writes its report."""
    report, log = tmp_path / "r.json", tmp_path / "r.json.partial.jsonl"
    r = pairbench(*GEMM, f"--report={report}")
    assert r.returncode == 0, r.stderr
    # A whole report stands for the log here: --recover takes either.
    log.write_text(report.read_text())
    report.unlink()
    _refused(pairbench(*GEMM, f"--report={report}"), "is the log of an earlier run cut short")
    assert log.exists() and not report.exists()
    # Nor may --recover write over the log it reads, however the path is spelled.
    _refused(pairbench(f"--recover={log}", f"--report={tmp_path}/./r.json.partial.jsonl"),
             "would overwrite the log")
    r = pairbench(f"--recover={log}")
    assert r.returncode == 0, r.stderr
    assert validate_report.problems(validate_report.load_strict(report)) == []


def test_google_benchmarks_output_goes_elsewhere_than_the_report(pairbench, tmp_path):
    report = tmp_path / "r.json"
    _refused(pairbench(*GEMM, f"--report={report}", f"--benchmark_out={tmp_path}//r.json"),
             "is where pairbench writes its report")
    _refused(pairbench(*GEMM, f"--report={report}", env={"BENCHMARK_OUT": f"{report}.partial.jsonl"}),
             "is where pairbench writes its log")
    assert not report.exists()


def test_google_benchmarks_variables_are_checked_as_its_flags(pairbench, tmp_path):
    """BENCHMARK_REPETITIONS=0 in the environment ran nothing and exited 0 with an empty report."""
    report = tmp_path / "r.json"
    _refused(pairbench(*GEMM, f"--report={report}", env={"BENCHMARK_REPETITIONS": "0"}),
             "BENCHMARK_REPETITIONS (Google Benchmark reads it as --benchmark_repetitions)")
    _refused(pairbench(*GEMM, f"--report={report}", env={"BENCHMARK_LIST_TESTS": "true"}),
             "BENCHMARK_LIST_TESTS")
    assert not report.exists()


def test_a_recovered_report_with_a_failed_case_exits_1(pairbench, tmp_path):
    _, doc = _gemm_run(pairbench, tmp_path, "--impls=omp,openblas", "--dtypes=fp32", rc=1,
                       env={"PAIRBENCH_INJECT_FAULT": "cpu/omp"})
    r = pairbench(f"--recover={tmp_path / 'r.json'}", f"--report={tmp_path / 'again.json'}")
    assert r.returncode == 1, r.stderr
    assert "1 case(s) failed" in r.stdout


def test_output_that_cannot_be_written_is_an_error(pairbench):
    with open("/dev/full", "w") as full:
        r = subprocess.run([str(pairbench.exe), "--list", *GEMM], stdout=full, stderr=subprocess.PIPE,
                           text=True, timeout=60)
    _refused(r, "cannot write to stdout")


def test_more_threads_than_cores_runs_and_says_so(pairbench, tmp_path):
    cores = len(os.sched_getaffinity(0))
    common = ("--ops=gemm", "--devices=cpu", "--impls=omp", "--dtypes=fp32", "--shape=m=32,n=32,k=32",
              "--benchmark_min_time=0.01", f"--report={tmp_path / 'r.json'}")
    r = pairbench(*common, f"--threads={cores + 1}")
    assert r.returncode == 0, r.stderr
    assert (f"warning: --threads asks for {cores + 1} threads and this process may use {cores} "
            "cores") in r.stderr
    r = pairbench(*common, f"--threads={cores}")
    assert r.returncode == 0 and "--threads asks" not in r.stderr, r.stderr


@pytest.mark.parametrize("value", ["abc", "0", "-5", "10s"])
def test_a_bad_nccl_timeout_exits_2_with_one_line(pairbench, value):
    """PAIRBENCH_NCCL_TIMEOUT (the deadline of NCCL's communicator) is checked on every run,
    before any collective: a value that is not a positive number of seconds is bad input."""
    r = pairbench("--ops=gemm", "--devices=cpu", "--shape=m=64,n=64,k=64",
                  env={"PAIRBENCH_NCCL_TIMEOUT": value})
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr
    assert len(lines) == 1, r.stderr
    assert f"PAIRBENCH_NCCL_TIMEOUT={value} is not a positive number of seconds" in lines[0]


def _gemm_run(pairbench, tmp_path, *args, env=None, shape="m=64,n=64,k=64", rc=0):
    """One CPU GEMM run; returns the process and its report, checked strictly."""
    report = tmp_path / "r.json"
    r = pairbench("--ops=gemm", "--devices=cpu", f"--shape={shape}", f"--report={report}",
                  "--benchmark_min_time=0.01", *args, env=env)
    assert r.returncode == rc, r.stderr
    doc = validate_report.load_strict(report)
    assert validate_report.problems(doc) == []
    return r, doc


def test_a_fallback_core_is_replaced_by_the_core_for_the_isa(pairbench, tmp_path):
    r, doc = _gemm_run(pairbench, tmp_path, "--impls=openblas", "--dtypes=fp32", env=FALLBACK)
    ctx = doc["context"]
    if USER_CORE:
        return _assert_the_users_core_is_kept(ctx, r.stderr)
    notes = [l for l in r.stderr.splitlines() if "OpenBLAS" in l]
    assert ctx["openblas_core_detected"] == "Prescott"
    if not ctx["openblas_core_for_isa"]:  # a CPU without AVX: nothing better to run
        assert ctx["openblas_core_source"] == "openblas" and notes == []
        return
    assert ctx["openblas_core_source"] == "pairbench", ctx
    assert ctx["openblas_core"].lower() != "prescott"
    assert len(notes) == 1 and notes[0].startswith("pairbench: OpenBLAS picked its Prescott"), r.stderr
    # The variable pairbench set for its own restart (no test sets it), and its value.
    assert "OPENBLAS_CORETYPE" + "=" + ctx["openblas_core_for_isa"] in notes[0]
    assert ctx["openblas_core_note"] == notes[0][len("pairbench: "):]


def test_a_training_case_restarts_for_its_reference_without_an_openblas_case(pairbench, tmp_path):
    # Its check's double-precision reference runs dgemm: on a GPU machine whose OpenBLAS falls
    # back to Prescott, a GPU-only run (the ResNet-50 target) verified on SSE3 kernels.
    report = tmp_path / "r.json"
    r = pairbench("--ops=train", "--devices=cpu", "--impls=onednn", "--dtypes=fp32",
                  "--shape=model=mlp,batch=4", f"--report={report}", "--benchmark_min_time=0.01",
                  env=FALLBACK)
    assert r.returncode == 0, r.stderr
    ctx = validate_report.load_strict(report)["context"]
    if USER_CORE:
        return _assert_the_users_core_is_kept(ctx, r.stderr)
    assert ctx["openblas_core_detected"] == "Prescott"
    if ctx["openblas_core_for_isa"]:  # a CPU with AVX has a better core: the restart took it
        assert ctx["openblas_core_source"] == "pairbench", ctx
        assert ctx["openblas_core"].lower() != "prescott"


def test_asis_keeps_the_fallback_core_and_warns_once(pairbench, tmp_path):
    r, doc = _gemm_run(pairbench, tmp_path, "--impls=openblas", "--dtypes=fp32",
                       "--openblas-core=asis", env=FALLBACK)
    ctx = doc["context"]
    if USER_CORE:
        return _assert_the_users_core_is_kept(ctx, r.stderr)
    assert ctx["openblas_core_source"] == "openblas"
    notes = [l for l in r.stderr.splitlines() if "OpenBLAS" in l]
    if ctx["openblas_core_for_isa"]:
        assert len(notes) == 1 and notes[0].startswith("pairbench: warning:"), r.stderr
        assert "--openblas-core=asis" in notes[0]
    else:
        assert notes == []


def test_no_note_when_no_openblas_case_runs(pairbench, tmp_path):
    r, doc = _gemm_run(pairbench, tmp_path, "--impls=omp", "--dtypes=fp32", env=FALLBACK)
    assert "OpenBLAS" not in r.stderr
    if USER_CORE:
        return _assert_the_users_core_is_kept(doc["context"], r.stderr)
    assert doc["context"]["openblas_core_source"] == "openblas"  # no re-execution for work without it


def test_a_broken_amx_palette_caps_onednn_and_bf16_still_verifies(pairbench, tmp_path):
    _, doc = _gemm_run(pairbench, tmp_path, "--impls=onednn", shape="m=96,n=80,k=200",
                       env={"PAIRBENCH_FAKE_AMX_PALETTE": "none"})
    ctx = doc["context"]
    if "onednn_version" not in ctx:
        pytest.skip(ctx["onednn_missing"])
    cases = {c["dtype"]: c for c in doc["pairbench"]["cases"]}
    assert cases["fp32"]["status"] == "ok" and cases["fp32"]["impl_detail"]
    if ctx["cpu_amx"] == "absent":  # nothing to cap for AMX (PAIRBENCH_FAKE_NO_16BIT may cap)
        assert "AMX" not in ctx.get("onednn_isa_cap", "")
        return
    assert "onednn_isa_cap" in ctx and "amx" not in ctx["onednn_isa"]
    for dtype, c in cases.items():  # no SIGILL; every dtype verified or skipped with the reason
        assert c["status"] in ("ok", "skipped"), c
        if c["status"] == "ok":
            assert "amx" not in c["impl_detail"], c


def test_a_cpu_without_16_bit_arithmetic_skips_those_cases_and_caps_onednn(pairbench, tmp_path):
    """The test hook scripts/test runs half its tests under: on any CPU, pairbench sees no bf16
    or fp16 arithmetic, skips those cases with the reason, and oneDNN runs fp32 below them."""
    _, doc = _gemm_run(pairbench, tmp_path, "--impls=onednn", env={"PAIRBENCH_FAKE_NO_16BIT": "1"})
    ctx = doc["context"]
    if "onednn_version" not in ctx:
        pytest.skip(ctx["onednn_missing"])
    assert not {"avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile"} & set(ctx["cpu_isa"].split())
    assert "PAIRBENCH_FAKE_NO_16BIT" in ctx["onednn_isa_cap"]
    assert not any(f in ctx["onednn_isa"] for f in ("bf16", "fp16", "amx")), ctx["onednn_isa"]
    cases = {c["dtype"]: c for c in doc["pairbench"]["cases"]}
    assert cases["fp32"]["status"] == "ok"
    assert cases["bf16"]["status"] == "skipped"
    assert "this CPU has no bf16 arithmetic" in cases["bf16"]["message"]


def test_the_cpu_peak_takes_its_clock_from_cpufreq_as_sysfs_gives_it(pairbench, tmp_path):
    """cpufreq is read under PAIRBENCH_SYSFS_ROOT as the caches are: a maximum clock it gives is
    the peak's; acpi-cpufreq with boost on gives its highest clock without boost, so the peak
    takes the nominal clock, the bound allows turbo, and the context says why."""
    def sysfs(driver, khz, boost=None):
        root = tmp_path / driver
        freq = root / "devices/system/cpu/cpu0/cpufreq"
        freq.mkdir(parents=True)
        (freq / "cpuinfo_max_freq").write_text(f"{khz}\n")
        (freq / "scaling_driver").write_text(f"{driver}\n")
        if boost is not None:
            (root / "devices/system/cpu/cpufreq").mkdir(parents=True)
            (root / "devices/system/cpu/cpufreq/boost").write_text(f"{boost}\n")
        return {"PAIRBENCH_SYSFS_ROOT": str(root)}

    _, doc = _gemm_run(pairbench, tmp_path, "--impls=omp", "--dtypes=fp32",
                       env=sysfs("intel_pstate", 3500000))
    ctx, fp32 = doc["context"], doc["context"]["ceilings"]["cpu"]["fp32"]
    assert ctx["cpu_max_ghz"] == 3.5 and "cpu_max_ghz_note" not in ctx
    assert "x 3.50 GHz (maximum clock, cpufreq)" in fp32["peak_source"]
    assert fp32["bound"] == fp32["peak"]

    _, doc = _gemm_run(pairbench, tmp_path, "--impls=omp", "--dtypes=fp32",
                       env=sysfs("acpi-cpufreq", 2450000, boost=1))
    ctx, fp32 = doc["context"], doc["context"]["ceilings"]["cpu"]["fp32"]
    assert "cpu_max_ghz" not in ctx and "(2.45 GHz)" in ctx["cpu_max_ghz_note"]
    assert "(nominal clock)" in fp32["peak_source"]
    assert fp32["bound"] == pytest.approx(2 * fp32["peak"])
    assert "acpi-cpufreq" in fp32["bound_source"]


def test_help(pairbench):
    r = pairbench("--help")
    assert r.returncode == 0
    assert "--suite=quick|standard|full" in r.stdout


def test_help_comes_from_the_registry(pairbench):
    # Every op and implementation that a run can have is in --help, with the op's shape keys.
    text = pairbench("--help").stdout
    cases = [n.split("  ")[0] for n in pairbench("--suite=quick", "--list").stdout.splitlines()]
    for name in cases:
        op, device, impl = name.split("/")[:3]
        assert f"\n{' ' * 23}{op}:" in text, op
        assert f" {device}/{impl}" in text, name
    assert "activation: fn=relu|" in text and "gemm: m=M,n=N,k=K" in text


def test_list_works_without_a_gpu(pairbench):
    r = pairbench("--suite=quick", "--list")
    assert r.returncode == 0
    names = r.stdout.splitlines()
    assert "gemm/cpu/openblas/m=256,n=256,k=256,dtype=fp32,threads=2" in [n.split("  ")[0] for n in names] or any(
        n.startswith("gemm/cpu/openblas/m=256,n=256,k=256,dtype=fp32,threads=") for n in names)
    gpu = [n for n in names if "/gpu/" in n]
    assert gpu, "GPU cases are listed even without a GPU"
    assert all("(skipped: no GPU:" in n for n in gpu) or all("skipped" not in n for n in gpu)
    # and says how long they would take (it said only the count while two families had no time)
    assert re.search(r"pairbench: \d+ cases to run, about .+ expected", r.stderr), r.stderr


def test_failed_verification_is_an_error_entry_and_exit_1(pairbench, tmp_path):
    _, doc = _gemm_run(pairbench, tmp_path, "--impls=omp,openblas", "--dtypes=fp32", rc=1,
                       env={"PAIRBENCH_INJECT_FAULT": "cpu/omp"})
    cases = {c["impl"]: c for c in doc["pairbench"]["cases"]}
    assert cases["omp"]["status"] == "error"
    assert "verification failed" in cases["omp"]["message"]
    assert "time" not in cases["omp"] and cases["omp"]["verified"] is False
    assert cases["openblas"]["status"] == "ok", "the run goes on after a failure"
    # No time for it reaches the CI tools (test_ci_tools.py: --keep-error-entries keeps them).
    assert not [b for b in doc["benchmarks"] if "/omp/" in b["name"]]


def test_a_step_checked_in_norm_says_so_in_its_record(pairbench, tmp_path):
    # ResNet-50 at batch 1 on 48x48: fp32's rounding alone moves its updates beyond a useful
    # bound, and the step is checked by its loss, statistics and update norms; batch 8 on 32x32
    # as usual.
    report = tmp_path / "r.json"
    r = pairbench("--ops=train", "--devices=cpu", "--impls=openblas", "--dtypes=fp32",
                  "--shape=model=resnet50,batch=1,image=48", "--shape=model=resnet50,batch=8,image=32",
                  f"--report={report}", "--benchmark_min_time=0.01")
    assert r.returncode == 0, r.stderr
    doc = validate_report.load_strict(report)
    assert validate_report.problems(doc) == []
    cases = {c["shape"]["batch"]: c for c in doc["pairbench"]["cases"]}
    assert cases["1"]["status"] == "ok" and cases["1"]["verified"], cases["1"]
    assert cases["1"]["verification"].startswith(
        "the loss, each running statistic and each update's norm (fp32's rounding"), cases["1"]
    assert cases["8"]["status"] == "ok" and "verification" not in cases["8"], cases["8"]


def test_progress_is_a_plain_line_per_case_in_a_log_and_none_under_quiet(pairbench, tmp_path):
    args = ["--ops=gemm", "--shape=m=64,n=64,k=64", "--devices=cpu", "--dtypes=fp32",
            "--impls=openblas,omp", "--threads=1,2", "--benchmark_min_time=0.01"]
    r = pairbench(*args, f"--report={tmp_path / 'r.json'}")
    assert r.returncode == 0, r.stderr
    lines = [l for l in r.stderr.splitlines() if l.startswith("[")]
    assert [l.split("]")[0] for l in lines] == ["[1/4", "[2/4", "[3/4", "[4/4"], r.stderr
    assert all("] gemm, " in l and " elapsed" in l and ": gemm/cpu/" in l for l in lines)
    assert "left" not in lines[0] and all(" left: " in l for l in lines[1:])  # once one finished
    assert "\r" not in r.stderr and "\x1b" not in r.stderr  # a log gets plain lines
    q = pairbench(*args, "--quiet", f"--report={tmp_path / 'q.json'}")
    assert q.returncode == 0, q.stderr
    assert not [l for l in q.stderr.splitlines() if l.startswith("[")], q.stderr


def test_interrupted_run_is_recovered(pairbench, tmp_path):
    report = tmp_path / "r.json"
    log = tmp_path / "r.json.partial.jsonl"
    p = subprocess.Popen([str(pairbench.exe), "--suite=quick", "--devices=cpu", f"--report={report}"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # Two measured cases, not two records: on a CPU without bf16 the first records may be
    # oneDNN's skipped bf16/fp16 cases.
    def measured():
        if not log.exists():
            return 0
        n = 0
        for line in log.read_text().splitlines():
            try:
                n += json.loads(line).get("case", {}).get("status") == "ok"
            except json.JSONDecodeError:  # the line being written
                pass
        return n

    deadline = time.time() + 180  # seconds here; a throttled VM has run 3-4x slower
    while time.time() < deadline and measured() < 2:
        time.sleep(0.05)
    assert measured() >= 2, "no two measured cases within 180 s"
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130
    assert "--recover" in err
    assert not report.exists()
    r = pairbench(f"--recover={log}")
    assert r.returncode == 0, r.stderr
    doc = validate_report.load_strict(report)
    assert validate_report.problems(doc) == []
    assert len([c for c in doc["pairbench"]["cases"] if c["status"] == "ok"]) >= 2


@pytest.mark.parametrize("args", [["--bogus"], ["--suite=quick", "--opps=gemm"], ["quick"]])
def test_run_refuses_an_unknown_flag_before_installing_or_building(args):
    """scripts/run checks the flags' names against pairbench's --help text in the source before
    setup and build (minutes on a fresh machine): one line, exit 2, nothing done."""
    r = subprocess.run([str(ROOT / "scripts" / "run"), *args], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown flag" in lines[0] and "nothing was installed" in lines[0]
    assert r.stdout == ""


def test_run_knows_every_flag_pairbench_lists(pairbench):
    """The names scripts/run reads from bench/options.cpp are the flags the built program's
    --help lists, and each is one pairbench takes (none refused as unknown)."""
    source = (ROOT / "bench" / "options.cpp").read_text()
    known = set(re.findall(r"^  (--[a-z-]+)", source, flags=re.M))
    helped = set(re.findall(r"^  (--[a-z-]+)", pairbench("--help").stdout, flags=re.M))
    assert known == helped and len(known) > 10
    for flag in known - {"--help", "--list", "--recover"}:
        r = pairbench(flag + "=", "--devices=cpu")
        assert "unknown flag" not in r.stderr, (flag, r.stderr)
