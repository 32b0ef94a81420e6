"""The timing the PyTorch comparison scripts share (torch_conv.py, torch_train.py)."""
import statistics
import time


def median_ms(fn, min_time, warmup=3, min_runs=10):
    """Median milliseconds of fn() over at least min_time seconds and min_runs calls, after
    warmup calls (primitive creation, caches)."""
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < min_time or len(times) < min_runs:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)
