#!/usr/bin/env python3
"""numpy's float32 matmul at n x n x n, timed like pairbench times a case (median of timed
iterations after a warm-up, output preallocated). Prints one JSON line: GFLOP/s and the BLAS
numpy runs (from threadpoolctl when it is installed, else numpy's build config)."""
import argparse
import json
import statistics
import time

import numpy as np


def blas_info():
    try:
        from threadpoolctl import threadpool_info
        return [{k: i.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
                for i in threadpool_info() if i.get("user_api") == "blas"]
    except ImportError:
        return "threadpoolctl not installed"


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=2048)
    p.add_argument("--min-time", type=float, default=1.0, help="seconds of timed iterations")
    a = p.parse_args()
    if a.n < 1:
        p.error("--n must be at least 1")
    if not 0 < a.min_time <= 3600:  # NaN and inf too: the loop would never end
        p.error(f"--min-time {a.min_time}: seconds above 0, at most 3600")
    rng = np.random.default_rng(42)
    x = rng.uniform(-1, 1, (a.n, a.n)).astype(np.float32)
    y = rng.uniform(-1, 1, (a.n, a.n)).astype(np.float32)
    out = np.empty((a.n, a.n), dtype=np.float32)
    for _ in range(3):
        np.matmul(x, y, out=out)
    times = []
    while sum(times) < a.min_time or len(times) < 3:
        t0 = time.perf_counter()
        np.matmul(x, y, out=out)
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    print(json.dumps({"impl": "numpy.matmul", "n": a.n, "median_s": median,
                      "gflops": 2.0 * a.n ** 3 / median / 1e9, "iterations": len(times),
                      "numpy": np.__version__, "blas": blas_info()}))


if __name__ == "__main__":
    main()
