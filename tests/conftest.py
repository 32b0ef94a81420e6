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


def pytest_collection_modifyitems(config, items):
    """Under PAIRBENCH_TEST_PROGRAM_ONLY=1, only the tests that run the program (those using the
    pairbench fixture, quick_reports included): scripts/test's second pytest, on the CPU-only
    build."""
    if os.environ.get("PAIRBENCH_TEST_PROGRAM_ONLY") != "1":
        return
    runs = [i for i in items if "pairbench" in getattr(i, "fixturenames", ())]
    config.hook.pytest_deselected(items=[i for i in items if i not in runs])
    items[:] = runs


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
        # 81 s on a 2-vCPU VM; 128-324 s there while it was throttled.
        r = pairbench("--suite=quick", f"--report={path}", timeout=900)
        assert r.returncode == 0, r.stderr
        out.append(path)
    return out


H100_SAMPLE = ROOT / "reports" / "samples" / "quick-h100.json"


def with_energy(doc):
    """doc, a report from before energy was metered (the H100 sample), as a run with both
    meters and --price=cpu=0.8,gpu=4 writes it: the training steps metered (the CPU at 100 W,
    the GPU at 400 W, one GPU step throttled by its power cap), the projection's kWh and
    dollars, the energy analysis and the CPU's effective clock. Every figure consistent."""
    ctx, analyses = doc["context"], doc["pairbench"]["analyses"]
    meters = {dev: {"status": "ok", "source": f"{dev} meter (a test)", "idle_power_w": idle,
                    "update_period_s": 0.001, "min_region_s": 0.02}
              for dev, idle in (("cpu", 50.0), ("gpu", 70.0))}
    ctx["energy"] = meters
    ctx["price_usd_per_hour"] = {"cpu": 0.8, "gpu": 4.0}
    power = {"cpu": 100.0, "gpu": 400.0}
    metered = {"cpu": [], "gpu": []}
    for c in doc["pairbench"]["cases"]:
        if c["status"] != "ok" or c.get("role") != "training":
            continue
        dev, joules = c["device"], power[c["device"]] * 0.5 / 10  # 0.5 s, 10 iterations
        e = {"status": "ok", "joules_per_iter": joules, "mean_power_w": power[dev],
             "above_idle_joules_per_iter": joules / 2, "region_s": 0.5, "iterations": 10,
             "lengthened": False, "joules_per_sample": joules / c["items"],
             "above_idle_joules_per_sample": joules / 2 / c["items"]}
        if dev == "gpu":
            throttled = not metered["gpu"]
            e.update(sm_clock_mhz=1980, memory_clock_mhz=2619, temperature_c=61,
                     clock_event_reasons=["sw_power_cap"] if throttled else [],
                     held_below_clocks_s={"power": 0.3 if throttled else 0.0}, throttled=throttled)
        c["energy"] = e
        metered[dev].append(c)
    pr = analyses["projection"]
    for dev, d in pr["devices"].items():
        kwh, usd = power[dev] * d["epoch_h"] / 1000, ctx["price_usd_per_hour"][dev]
        d.update(mean_power_w=power[dev], epoch_kwh=kwh, training_kwh=kwh * pr["epochs"],
                 epoch_above_idle_kwh=kwh / 2, usd_per_hour=usd, epoch_usd=usd * d["epoch_h"],
                 training_usd=usd * d["training_h"])
    cpu, gpu = pr["devices"]["cpu"], pr["devices"]["gpu"]
    pr["cost_cpu_over_gpu"] = cpu["epoch_usd"] / gpu["epoch_usd"]
    pr["energy_cpu_over_gpu"] = cpu["epoch_kwh"] / gpu["epoch_kwh"]
    analyses["energy"] = {"devices": {}, "cpu_effective_clock": [
        {"when": "start", "effective_ghz": 3.1}, {"when": "end", "effective_ghz": 2.4}]}
    for dev, cases in metered.items():
        w = power[dev]
        analyses["energy"]["devices"][dev] = dict(
            meters[dev], cases_metered=len(cases), power_w={"min": w, "median": w, "max": w})
    analyses["energy"]["devices"]["gpu"]["throttled_cases"] = [
        {"name": c["name"], "clock_event_reasons": c["energy"]["clock_event_reasons"],
         "held_below_clocks_s": c["energy"]["held_below_clocks_s"], "region_s": 0.5}
        for c in metered["gpu"] if c["energy"]["throttled"]]
    return doc
