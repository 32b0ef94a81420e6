"""Several ranks under mpirun on this machine (2 ranks sharing its cores; oversubscription and
running as root allowed for these tests only): the collectives verified, the same iterations
timed on every rank, one report written by rank 0, and bad launches as one error on every rank."""
import json
import os
import shutil
import subprocess

import pytest

MPIRUN = shutil.which("mpirun")
pytestmark = pytest.mark.skipif(not MPIRUN, reason="no mpirun: scripts/setup installs OpenMPI")

# What OpenMPI needs in a container, as root, with more ranks than it counts cores.
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "OMPI_MCA_btl_vader_single_copy_mechanism": "none", "OMPI_MCA_rmaps_base_oversubscribe": "1"}


def mpirun(*args, timeout=300):
    return subprocess.run([MPIRUN, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **MPI_ENV})


def test_two_ranks_verify_each_collective_and_write_one_report(pairbench, tmp_path):
    report = tmp_path / "r.json"
    r = mpirun("-np", "2", str(pairbench.exe), "--ops=collective", "--devices=cpu", "--suite=quick",
               f"--report={report}")
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]  # rank 0's alone, no log left
    assert r.stdout.count("report: ") == 1  # rank 1 says nothing on stdout
    doc = json.loads(report.read_text())
    assert doc["context"]["ranks"]["size"] == 2
    assert [p["local_rank"] for p in doc["context"]["ranks"]["per_rank"]] == [0, 1]
    cases = doc["pairbench"]["cases"]
    kinds = {c["shape"]["coll"] for c in cases}
    assert kinds == {"allreduce", "allgather", "reduce_scatter", "broadcast"}
    assert {c["dtype"] for c in cases} == {"fp32", "bf16"}
    for c in cases:
        assert c["status"] == "ok" and c["verified"], c
        assert c["shape"]["ranks"] == "2"
        by_rank = c["iterations_by_rank"]
        assert len(by_rank) == 2 and by_rank[0] == by_rank[1] == c["time"]["iterations"], c


def test_one_rank_lists_collectives_as_skipped_saying_how_to_launch(pairbench):
    r = pairbench("--ops=collective", "--devices=cpu", "--suite=quick", "--list")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines and all("skipped: one rank: a collective needs several (mpirun -np N" in l
                         for l in lines)


def test_ranks_running_other_cases_is_one_error_on_every_rank(pairbench, tmp_path):
    # An MPMD launch whose two ranks were given different ops: their collectives would not match.
    r = mpirun("-np", "1", str(pairbench.exe), "--ops=collective", "--suite=quick",
               f"--report={tmp_path / 'a.json'}", ":", "-np", "1", str(pairbench.exe),
               "--ops=stream", "--suite=quick", f"--report={tmp_path / 'a.json'}", timeout=120)
    assert r.returncode != 0
    errors = [l for l in r.stderr.splitlines() if l.startswith("pairbench: error:")]
    assert len(errors) == 2, r.stderr  # one line from each rank
    assert all("other cases than rank 0" in l for l in errors)
    assert not (tmp_path / "a.json").exists()


def test_a_shape_for_another_number_of_ranks_is_bad_input_on_every_rank(pairbench, tmp_path):
    r = mpirun("-np", "2", str(pairbench.exe), "--ops=collective",
               "--shape=coll=allreduce,bytes=4096,ranks=3", f"--report={tmp_path / 'b.json'}",
               timeout=120)
    assert r.returncode == 2
    errors = [l for l in r.stderr.splitlines() if l.startswith("pairbench: error:")]
    assert len(errors) == 2 and all("ranks=3 but this run has 2" in l for l in errors), r.stderr


@pytest.mark.parametrize("how", [["--benchmark_enable_random_interleaving"],
                                 ["--benchmark_enable_random_interleaving=yes"], "env"])
def test_random_interleaving_under_ranks_is_bad_input_on_every_rank(pairbench, tmp_path, how):
    # Google Benchmark shuffles the cases by each process's own seed: the ranks' collectives
    # would not match, and the run would hang.
    args = [] if how == "env" else how
    env = ["-x", "BENCHMARK_ENABLE_RANDOM_INTERLEAVING=true"] if how == "env" else []
    r = mpirun(*env, "-np", "2", str(pairbench.exe), "--ops=collective", "--suite=quick",
               "--devices=cpu", *args, f"--report={tmp_path / 'c.json'}", timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    errors = [l for l in r.stderr.splitlines() if l.startswith("pairbench: error:")]
    assert len(errors) == 2, r.stderr
    assert all("--benchmark_enable_random_interleaving: each rank would shuffle" in l
               for l in errors), r.stderr
    assert not (tmp_path / "c.json").exists()


def test_a_check_failing_on_one_rank_fails_the_case_on_both_without_a_hang(pairbench, tmp_path):
    # The fault hook on rank 1 only: its all-reduce fails its check; rank 0's passes alone.
    report = tmp_path / "f.json"
    common = ["--ops=collective", "--devices=cpu", "--shape=coll=allreduce,bytes=4096", f"--report={report}",
              "--quiet"]
    r = mpirun("-np", "1", str(pairbench.exe), *common, ":",
               "-np", "1", "-x", "PAIRBENCH_INJECT_FAULT=coll=allreduce", str(pairbench.exe),
               *common, timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr
    case = json.loads(report.read_text())["pairbench"]["cases"][0]
    assert case["status"] == "error" and "time" not in case
    assert "failed on another rank" in case["message"], case


def test_two_ranks_train_data_parallel_each_step_verified_and_scaled(pairbench, tmp_path):
    # Each rank steps on its shard of the global batch; the averaged step is verified on every rank
    # against the reference that runs every shard (without batch norm: one step on the global
    # batch, tests/test_train.cpp), and every rank must hold the same parameters after it.
    report = tmp_path / "t.json"
    r = mpirun("-np", "2", str(pairbench.exe), "--ops=train", "--devices=cpu", "--dtypes=fp32",
               "--shape=model=mlp,batch=32", "--shape=model=mlp,batch=32,grads=local",
               "--shape=model=cnn,batch=8", "--shape=model=cnn,batch=8,grads=local",
               "--busbw=cpu=2", f"--report={report}", "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(report.read_text())
    cases = doc["pairbench"]["cases"]
    assert {c["shape"]["model"] for c in cases} == {"mlp", "cnn"}
    for c in cases:
        assert c["status"] == "ok" and c["verified"], c
        assert c["shape"]["ranks"] == "2" and c["threads"] >= 1
        by_rank = c["iterations_by_rank"]
        assert len(by_rank) == 2 and by_rank[0] == by_rank[1] == c["time"]["iterations"], c
        assert c["samples_per_s"] == pytest.approx(64 / c["time"]["median_s"] if c["shape"]["model"] == "mlp"
                                                   else 16 / c["time"]["median_s"], rel=1e-6)
    scaling = doc["pairbench"]["analyses"]["scaling"]
    steps = scaling["steps"]
    assert {s["model"] for s in steps} == {"mlp", "cnn"}
    assert all("grads" not in s["name"] for s in steps)  # the local twins are the baseline
    for s in steps:
        assert s["ranks"] == 2 and s["global_batch"] == 2 * s["batch"]
        assert s["efficiency"] == pytest.approx(s["local_step_s"] / s["step_s"])
        assert "prediction" in s  # no all-reduce ran in this run: no prediction, and why
    assert any(s["overlapped"] for s in steps) == ("onednn_overlap" in {c["impl"] for c in cases})
    cluster = {c["model"]: c for c in scaling["cluster"]}
    assert set(cluster) == {"mlp", "cnn"}
    for c in cluster.values():
        assert c["busbw_source"] == "--busbw" and c["busbw_gbs"] == 2
        sizes = c["sizes"]
        assert [z["ranks"] for z in sizes] == [2 ** i for i in range(11)]
        assert sizes[0]["efficiency"] == 1
        assert all(a["efficiency"] >= b["efficiency"] for a, b in zip(sizes, sizes[1:]))
    # The single-device analyses leave the multi-rank steps out.
    assert doc["pairbench"]["analyses"]["projection"]["devices"] == {}
    assert "Scaling, cpu" in r.stdout and "Cluster, cpu" in r.stdout


COLLECTIVE = ["--ops=collective", "--devices=cpu", "--shape=coll=allreduce,bytes=4096"]


def _one_error_on_each_rank(r, message):
    errors = [l for l in r.stderr.splitlines() if l.startswith("pairbench: error:")]
    assert r.returncode == 2, r.stderr
    assert len(errors) == 2 and all(message in l for l in errors), r.stderr


@pytest.mark.parametrize("launch,flags", [
    ([], ["--benchmark_min_time=0.5"]),
    ([], ["--benchmark_min_time=0.01", "--benchmark_repetitions=2"]),
    ([], ["--benchmark_min_time=0.01", "--cold"]),
    (["-x", "BENCHMARK_MIN_TIME=0.5"], []),
], ids=["min_time", "repetitions", "cold", "variable"])
def test_ranks_timing_the_cases_otherwise_is_one_error_on_every_rank(pairbench, tmp_path, launch,
                                                                     flags):
    """Ranks that time the cases otherwise (Google Benchmark's flags or variables, --cold) would
    call their collectives a different number of times: rank 0 waited forever in one. Rank 0
    runs at --benchmark_min_time=0.01; rank 1 as `launch` (mpirun's) and `flags` say."""
    report = f"--report={tmp_path / 'r.json'}"
    r = mpirun("-np", "1", str(pairbench.exe), *COLLECTIVE, "--benchmark_min_time=0.01", report, ":",
               "-np", "1", *launch, str(pairbench.exe), *COLLECTIVE, *flags, report, timeout=120)
    _one_error_on_each_rank(r, "would time the cases otherwise than rank 0")
    assert not (tmp_path / "r.json").exists()


def test_ranks_filtering_other_cases_is_one_error_on_every_rank(pairbench, tmp_path):
    """A filter that leaves a rank fewer cases crashed MPI (a truncated message), one that leaves
    it others paired an fp32 all-reduce with a bf16 one."""
    report = f"--report={tmp_path / 'r.json'}"
    common = [*COLLECTIVE, "--benchmark_min_time=0.01", report]
    for filters in (([], ["--benchmark_filter=fp32"]),
                    (["--benchmark_filter=fp32"], ["--benchmark_filter=bf16"])):
        r = mpirun("-np", "1", str(pairbench.exe), *common, *filters[0], ":", "-np", "1",
                   str(pairbench.exe), *common, *filters[1], timeout=120)
        _one_error_on_each_rank(r, "other cases than rank 0")


def test_help_list_and_recover_under_ranks(pairbench, tmp_path):
    r = mpirun("-np", "2", str(pairbench.exe), "--help", timeout=120)
    assert r.returncode == 0 and r.stdout.count("usage: pairbench") == 1, r.stderr
    r = mpirun("-np", "2", str(pairbench.exe), *COLLECTIVE, "--list", timeout=120)
    assert r.returncode == 0 and r.stderr.count("cases to run") == 1, r.stderr
    assert r.stdout.splitlines() == [l for l in r.stdout.splitlines() if "collective/cpu/" in l]
    r = mpirun("-np", "2", str(pairbench.exe), f"--recover={tmp_path / 'r.json'}", timeout=120)
    _one_error_on_each_rank(r, "--recover runs nothing: run it as one process")


def test_a_failure_on_another_rank_says_why_on_its_own(pairbench, tmp_path):
    """The record says 'the first run failed on another rank (its messages say why)': that rank
    says why on stderr, its stdout being shut."""
    args = [str(pairbench.exe), "--ops=gemm", "--devices=cpu", "--dtypes=fp32", "--impls=cpu/omp",
            "--shape=m=64,n=64,k=64", "--benchmark_min_time=0.01", f"--report={tmp_path / 'r.json'}"]
    r = mpirun("-np", "1", *args, ":", "-np", "1", "-x", "PAIRBENCH_INJECT_FAULT=cpu/omp", *args,
               timeout=120)
    assert r.returncode == 1, r.stderr
    assert "pairbench: rank 1: gemm/cpu/omp/" in r.stderr and "verification failed" in r.stderr
