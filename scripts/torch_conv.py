#!/usr/bin/env python3
"""PyTorch's CPU convolution passes on one shape, for scripts/vs_torch_conv.

Runs in a virtual environment of its own with torch from PyPI. Times, per pass (fwd, bwd_data,
bwd_filter), PyTorch's default path (oneDNN, "mkldnn") and, with torch.backends.mkldnn.flags
(enabled=False), its im2col + BLAS path; the backward passes through
torch.ops.aten.convolution_backward with the output mask of that pass alone. Inputs are fp32
NCHW. Prints one JSON object: median milliseconds per pass and path."""
import argparse
import json

import torch

from torch_timing import median_ms


def main():
    ap = argparse.ArgumentParser()
    for k in ("batch", "c", "h", "w", "k", "r", "stride", "pad", "threads"):
        ap.add_argument(f"--{k}", type=int, required=True)
    ap.add_argument("--min-time", type=float, default=1.0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(a.batch, a.c, a.h, a.w, generator=g) * 2 - 1
    w = torch.rand(a.k, a.c, a.r, a.r, generator=g) * 2 - 1
    b = torch.rand(a.k, generator=g) * 2 - 1
    y = torch.nn.functional.conv2d(x, w, b, a.stride, a.pad)
    dy = torch.rand(y.shape, generator=g) * 2 - 1
    st, pd = [a.stride] * 2, [a.pad] * 2

    def backward(mask):
        return lambda: torch.ops.aten.convolution_backward(dy, x, w, [a.k], st, pd, [1, 1], False,
                                                           [0, 0], 1, mask)

    passes = {
        "fwd": lambda: torch.nn.functional.conv2d(x, w, b, a.stride, a.pad),
        "bwd_data": backward([True, False, False]),
        "bwd_filter": backward([False, True, True]),
    }
    out = {"torch": torch.__version__, "threads": torch.get_num_threads(),
           "mkldnn_available": torch.backends.mkldnn.is_available(), "default_ms": {},
           "no_mkldnn_ms": {}}
    with torch.no_grad():
        for name, fn in passes.items():
            out["default_ms"][name] = median_ms(fn, a.min_time, warmup=2, min_runs=5)
        with torch.backends.mkldnn.flags(enabled=False):
            for name, fn in passes.items():
                out["no_mkldnn_ms"][name] = median_ms(fn, a.min_time, warmup=2, min_runs=5)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
