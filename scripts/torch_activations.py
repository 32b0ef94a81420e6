#!/usr/bin/python3
"""PyTorch's CPU activations, forward, into a preallocated output: the yardstick for
pairbench's activation/cpu/omp. Run with Debian's python3 and python3-torch.
Usage: torch_activations.py [--n N] [--threads T] [--min-time S]; prints one JSON line:
GB/s per function (8 bytes per element: read x, write y), median of the timed calls."""
import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

FUNCTIONS = {
    "relu": lambda x, out: torch.clamp(x, min=0.0, out=out),
    "leaky_relu": lambda x, out: torch._C._nn.leaky_relu(x, 0.01, out=out),
    "gelu_tanh": lambda x, out: torch._C._nn.gelu(x, approximate="tanh", out=out),
    "gelu_erf": lambda x, out: torch._C._nn.gelu(x, approximate="none", out=out),
    "sigmoid": lambda x, out: torch.sigmoid(x, out=out),
    "tanh": lambda x, out: torch.tanh(x, out=out),
}


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=1 << 26)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--min-time", type=float, default=1.0)
    a = p.parse_args()
    if a.n < 1 or a.threads < 1:
        p.error("--n and --threads must be at least 1")
    torch.set_num_threads(a.threads)
    x = (torch.rand(a.n, dtype=torch.float32) * 16) - 8
    out = torch.empty_like(x)
    result = {"torch": torch.__version__, "threads": a.threads, "n": a.n, "gbs": {}}
    for name, fn in FUNCTIONS.items():
        fn(x, out)
        if name == "gelu_erf":  # the out= variant must compute what F.gelu does
            assert torch.allclose(out, F.gelu(x), rtol=1e-5, atol=1e-6)
        times = []
        while sum(times) < a.min_time or len(times) < 3:
            t0 = time.perf_counter()
            fn(x, out)
            times.append(time.perf_counter() - t0)
        result["gbs"][name] = 8.0 * a.n / statistics.median(times) / 1e9
    print(json.dumps(result))


if __name__ == "__main__":
    main()
