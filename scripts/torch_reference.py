#!/usr/bin/env python3
"""PyTorch's run of pairbench's workloads, for scripts/reference.py: torch_reference.py JOBS.json

JOBS.json: {"min_time": seconds, "cases": [{"name", "op", "device", "shape", "dtype",
"threads"}, ...]}, one per workload of a pairbench report (shape: the case's shape keys as
strings). For each, builds the same work in torch on the same device (torch.set_num_threads
equal on the CPU), checks its result against a float64 torch computation on the same inputs,
and only then times it: the median of calls over at least min_time seconds after warm-up calls
(first calls, cudnn.benchmark's search), perf_counter on the CPU, CUDA events on the GPU. Where
a layout is torch's choice (convolutions and the conv models: NCHW or channels_last), the faster
of the two is its figure. Prints one JSON object: torch's version and build, and per case name
{status: ok|error|skipped, median_s, min_s, runs, max_error, tolerance, check, layout, message}.
A case whose check fails, or that torch raises an error on, is "error" with no time; one torch
cannot run (a dtype it lacks on that device, out of GPU memory) is "skipped" with the reason.
Progress goes to stderr, one line a case.

Runs in a virtual environment of its own with torch and torchvision from PyPI
(scripts/torch_venv). Environment: PAIRBENCH_REFERENCE_FAULT=OP spoils OP's torch result before
its check (the tests' proof that a wrong result fails)."""
import copy
import json
import math
import os
import re
import statistics
import sys
import time
import zlib

import torch
import torch.nn.functional as F

from torch_activations import FUNCTIONS

DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16,
          "fp16": torch.float16}
# Unit roundoff of each dtype's storage (tf32: of its tensor cores' inputs).
U = {"fp32": 2.0 ** -24, "tf32": 2.0 ** -11, "bf16": 2.0 ** -8, "fp16": 2.0 ** -11}
FAULT = os.environ.get("PAIRBENCH_REFERENCE_FAULT", "")


class Skip(Exception):
    """The workload is one torch cannot run as pairbench does; str() says why."""


# --- inputs, checks, timing -------------------------------------------------------------------

def uniform(gen, *shape, scale=1.0):
    """Uniform in [-scale, scale), float32, on the CPU (generated there on every device, so a
    workload's inputs do not depend on the device)."""
    return (torch.rand(*shape, generator=gen) * 2 - 1) * scale


def representable(t, dtype):
    """t rounded to dtype's precision (to tf32's 10-bit mantissa for tf32), kept in float32."""
    if dtype == "tf32":
        i = t.view(torch.int32)
        return ((i + 0xFFF + ((i >> 13) & 1)) & ~0x1FFF).view(torch.float32)
    return t.to(DTYPES[dtype]).float()


def u_mid(dtype, dev):
    """What a GPU may round to the dtype inside a GEMM or convolution besides its inputs and
    output: split-K partial sums (torch's allow_*_reduced_precision_reduction), Winograd's
    transformed tiles; a few roundings, counted as eight."""
    return 8 * U[dtype] if dev.type == "cuda" and dtype != "fp32" else 0.0


def norm_tolerance(dtype, terms):
    """A GEMM's or convolution's result against float64 in norm: fp32's summation error with
    high probability, 16 u (sqrt(terms) + 1) (Higham and Mary), and eight roundings of the
    dtype. A result 1% off fails in fp32, tf32 and fp16, 10% off in bf16."""
    return 16 * U["fp32"] * (math.sqrt(terms) + 1) + (8 * U[dtype] if dtype != "fp32" else 0.0)


def u_in(dtype):
    """The rounding of an input inside the multiply: tf32's tensor cores round fp32 inputs."""
    return U["tf32"] if dtype == "tf32" else 0.0


def worst(got, want, scale):
    """The largest |got - want| / scale, in float64 (NaN anywhere gives inf)."""
    e = (got.cpu().double() - want.cpu().double()).abs() / scale
    return math.inf if torch.isnan(e).any() else float(e.max())


def rel_norm(got, want):
    """|got - want| / |want| in norm, float64."""
    g, w = got.cpu().double(), want.cpu().double()
    return float((g - w).norm() / max(float(w.norm()), 1e-300))


def verdict(errors, check):
    """The check's outcome: errors maps a quantity to (error, tolerance); the worst by its
    share of the tolerance decides (a NaN error counts as infinite)."""
    errors = {k: (e if math.isfinite(e) else math.inf, t) for k, (e, t) in errors.items()}
    name, (err, tol) = max(errors.items(), key=lambda kv: kv[1][0] / kv[1][1]
                           if kv[1][1] else (math.inf if kv[1][0] else 0.0))
    ok = err <= tol
    out = {"max_error": err if math.isfinite(err) else 1e300, "tolerance": tol, "check": check,
           "status": "ok" if ok else "error"}
    if not ok:
        out["message"] = f"{name}: error {err:.3g} above its tolerance {tol:.3g} ({check})"
    return out


def spoil(op, t):
    """t itself, or t 10% off when PAIRBENCH_REFERENCE_FAULT names op."""
    return t * 1.1 if FAULT == op else t


def timed(fn, device, min_time, warmup=3, min_runs=5):
    """(median_s, min_s, runs) of fn() after warmup calls. On a GPU, between CUDA events, each
    behind a spin kernel (about 50-100 us) that keeps the stream busy while the host enqueues
    the call, as pairbench's GPU timer does, so host time stays out of the figure."""
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.synchronize()
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    while time.perf_counter() - start < min_time or len(times) < min_runs:
        if device.type == "cuda":
            torch.cuda._sleep(100_000)  # clock cycles
            begin.record()
            fn()
            end.record()
            end.synchronize()
            times.append(begin.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times), len(times)


def math_mode(device, dtype):
    """tf32 tensor cores only for dtype=tf32 (pairbench's fp32 GPU cases use none);
    cudnn.benchmark on the GPU as a PyTorch user sets it."""
    tf32 = dtype == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = device.type == "cuda"


def num(shape, key, default=None):
    if key not in shape:
        if default is None:
            raise Skip(f"no {key} in the shape")
        return default
    return int(shape[key]) if re.fullmatch(r"-?\d+", shape[key]) else float(shape[key])


# --- the ops ----------------------------------------------------------------------------------
# Each returns (checked, run): checked is verdict()'s dict for one call's result, run the call
# to time; or a list of (layout, checked, run) where torch has a choice of layout.

def gemm(s, dtype, dev, gen):
    """C = alpha op(A) op(B) + beta C0, row-major as pairbench's; torch's matmul in the dtype
    (its output too). Freivalds' check: C x against A (B x) in float64 for a sign vector x, each
    row within twice its worst-case bound, (k u + 2 u_in + u_mid) (|A||B| 1)_i + u_out (|C| 1)_i,
    and the whole within norm_tolerance."""
    m, n, k = num(s, "m"), num(s, "n"), num(s, "k")
    ta, tb = num(s, "ta", 0), num(s, "tb", 0)
    alpha, beta = num(s, "alpha", 1), num(s, "beta", 0)
    a32 = representable(uniform(gen, *((k, m) if ta else (m, k))), dtype)
    b32 = representable(uniform(gen, *((n, k) if tb else (k, n))), dtype)
    c32 = representable(uniform(gen, m, n), dtype)
    a, b, c = (t.to(DTYPES[dtype]).to(dev) for t in (a32, b32, c32))
    opa, opb = (a.t() if ta else a), (b.t() if tb else b)
    plain = alpha == 1 and beta == 0
    out = torch.empty(m, n, dtype=DTYPES[dtype], device=dev)

    def run():
        if plain:
            return torch.mm(opa, opb, out=out)
        return torch.addmm(c, opa, opb, beta=beta, alpha=alpha, out=out)

    got = spoil("gemm", run()).double().cpu()
    A = a32.double().t() if ta else a32.double()
    B = b32.double().t() if tb else b32.double()
    x = torch.randint(0, 2, (n,), generator=gen).double() * 2 - 1
    want = alpha * (A @ (B @ x)) + beta * (c32.double() @ x)
    terms = abs(alpha) * (A.abs() @ B.abs().sum(1)) + abs(beta) * c32.double().abs().sum(1)
    bound = (k * U["fp32"] + 2 * u_in(dtype) + u_mid(dtype, dev)) * terms \
        + U[dtype] * got.abs().sum(1)
    return verdict({"C x": (worst(got @ x, want, bound + 1e-300), 2.0),
                    "C x in norm": (rel_norm(got @ x, want), norm_tolerance(dtype, k))},
                   "Freivalds in float64: each row in units of its rounding bound, and in "
                   "norm"), run


def conv(s, dtype, dev, gen):
    """The convolution pass of pairbench's conv case (cross-correlation, NCHW data, KCRS filters,
    the bias in fwd, the bias gradient in bwd_filter), in NCHW and in channels_last. Checked
    at every point against float64, within 4 times its worst-case bound: (T u + 2 u_in + u_mid)
    times the same pass on the inputs' magnitudes, plus u_out of the result, T the terms of a
    point; and each output within norm_tolerance."""
    d = s.get("dir", "fwd")
    N, C, H, W, K, R = (num(s, key) for key in ("batch", "c", "h", "w", "k", "r"))
    S, st, pd = num(s, "s", R), num(s, "stride", 1), num(s, "pad", 0)
    if S != R:
        raise Skip("a non-square filter")
    P, Q = (H + 2 * pd - R) // st + 1, (W + 2 * pd - S) // st + 1
    x32 = representable(uniform(gen, N, C, H, W), dtype)
    w32 = representable(uniform(gen, K, C, R, S), dtype)
    b32 = representable(uniform(gen, K), dtype)
    dy32 = representable(uniform(gen, N, K, P, Q), dtype)
    terms = {"fwd": C * R * S, "bwd_data": K * R * S / (st * st), "bwd_filter": N * P * Q}[d]
    u_sum = terms * U["fp32"] + 2 * u_in(dtype) + u_mid(dtype, dev)
    X, Wt, B, DY = (t.double() for t in (x32, w32, b32, dy32))

    def passes(x, w, b, dy):
        if d == "fwd":
            return lambda: (F.conv2d(x, w, b, st, pd),)
        mask = [True, False, False] if d == "bwd_data" else [False, True, True]
        return lambda: tuple(t for t in torch.ops.aten.convolution_backward(
            dy, x, w, [K], [st, st], [pd, pd], [1, 1], False, [0, 0], 1, mask) if t is not None)

    want = passes(X, Wt, B, DY)()
    mags = passes(X.abs(), Wt.abs(), B.abs(), DY.abs())()
    out = []
    for layout in (torch.contiguous_format, torch.channels_last):
        x, w, dy = (t.to(DTYPES[dtype]).to(dev).contiguous(memory_format=layout)
                    for t in (x32, w32, dy32))
        run = passes(x, w, b32.to(DTYPES[dtype]).to(dev), dy)
        got = run()
        errors = {}
        for name, g, wt, mg in zip(("dw", "db") if d == "bwd_filter" else
                                   ("dx",) if d == "bwd_data" else ("y",), got, want, mags):
            g = spoil("conv", g)
            errors[name] = (worst(g, wt, u_sum * mg + U[dtype] * wt.abs() + 1e-300), 4.0)
            errors[f"{name} in norm"] = (rel_norm(g, wt), norm_tolerance(dtype, terms))
        out.append(("nchw" if layout == torch.contiguous_format else "channels_last",
                    verdict(errors, "every point in float64, in units of its rounding bound"),
                    run))
    return out


# Forward into a preallocated output: scripts/torch_activations.py's FUNCTIONS. Here each
# function's backward from what autograd keeps (x, or y for sigmoid and tanh) and its float64
# form.
ACTIVATIONS = {
    "relu": (lambda dy, x, y, o: torch.ops.aten.threshold_backward.grad_input(dy, x, 0, grad_input=o),
             lambda x: x.clamp(min=0)),
    "leaky_relu": (lambda dy, x, y, o: torch.ops.aten.leaky_relu_backward.grad_input(
                       dy, x, 0.01, False, grad_input=o),
                   lambda x: torch.where(x > 0, x, 0.01 * x)),
    "gelu_tanh": (lambda dy, x, y, o: torch.ops.aten.gelu_backward.grad_input(
                      dy, x, approximate="tanh", grad_input=o),
                  lambda x: 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))),
    "gelu_erf": (lambda dy, x, y, o: torch.ops.aten.gelu_backward.grad_input(
                     dy, x, approximate="none", grad_input=o),
                 lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))),
    "sigmoid": (lambda dy, x, y, o: torch.ops.aten.sigmoid_backward.grad_input(dy, y, grad_input=o),
                torch.sigmoid),
    "tanh": (lambda dy, x, y, o: torch.ops.aten.tanh_backward.grad_input(dy, y, grad_input=o),
             torch.tanh),
}


def activation(s, dtype, dev, gen):
    """fn forward, or its backward dx = dy f'(x), on n fp32 elements, x in [-8, 8). Checked
    against float64 autograd: ReLU exactly, the others within 1e-5 of max(|float64|, 1)."""
    fn, d, n = s.get("fn", ""), s.get("dir", "fwd"), num(s, "n")
    if fn not in ACTIVATIONS:
        raise Skip(f"no activation {fn}")
    fwd, (bwd, exact) = FUNCTIONS[fn], ACTIVATIONS[fn]
    x32, dy32 = uniform(gen, n, scale=8.0), uniform(gen, n)
    x, dy, o = x32.to(dev), dy32.to(dev), torch.empty(n, device=dev)
    X = x32.double().requires_grad_()
    Y = exact(X)
    if d == "fwd":
        run, want = (lambda: fwd(x, o)), Y.detach()
    else:
        y = fwd(x, torch.empty(n, device=dev))
        run, want = (lambda: bwd(dy, x, y, o)), torch.autograd.grad(Y, X, dy32.double())[0]
    got = spoil("activation", run())
    tol = 0.0 if fn == "relu" else 1e-5
    return verdict({"y" if d == "fwd" else "dx": (worst(got, want, want.abs().clamp(min=1)), tol)},
                   "every element, float64"), run


def rows_cols(s, gen, dev):
    r, c = num(s, "rows"), num(s, "cols")
    x32 = uniform(gen, r, c, scale=8.0)
    return r, c, x32, x32.to(dev)


def softmax(s, dtype, dev, gen):
    """Row-wise softmax, each element within 4 (4 + sqrt(cols)) fp32 roundoffs of float64."""
    r, c, x32, x = rows_cols(s, gen, dev)
    o = torch.empty_like(x)
    run = lambda: torch.ops.aten._softmax.out(x, 1, False, out=o)  # noqa: E731
    want = torch.softmax(x32.double(), 1)
    got = spoil("softmax", run())
    return verdict({"y": (worst(got, want, want.abs() + 1e-300), 4 * (4 + math.sqrt(c)) * U["fp32"])},
                   "every element, relative, float64"), run


def loss(s, dtype, dev, gen):
    """Softmax cross-entropy: fwd the per-row losses; bwd d logits of the mean loss from what
    autograd keeps (log_softmax's output), as torch's backward runs it. Within 1e-5 of float64
    (the losses relative to max(|loss|, 1), the gradient to its largest element)."""
    d = s.get("dir", "fwd")
    r, c, x32, x = rows_cols(s, gen, dev)
    labels = torch.randint(0, c, (r,), generator=gen)
    lab = labels.to(dev)
    logp = torch.log_softmax(x, 1)
    if d == "fwd":
        run = lambda: F.cross_entropy(x, lab, reduction="none")  # noqa: E731
        want = F.cross_entropy(x32.double(), labels, reduction="none")
        scale = want.abs().clamp(min=1)
    else:
        g1, total = torch.tensor(1.0, device=dev), torch.tensor(float(r), device=dev)

        def run():
            g = torch.ops.aten.nll_loss_backward(g1, logp, lab, None, 1, -100, total)
            return torch.ops.aten._log_softmax_backward_data(g, logp, 1, torch.float32)
        want = (torch.softmax(x32.double(), 1) - F.one_hot(labels, c).double()) / r
        scale = want.abs().max()
    got = spoil("loss", run())
    return verdict({"loss" if d == "fwd" else "dx": (worst(got, want, scale + 1e-300), 1e-5)},
                   "every element, float64"), run


def batchnorm(s, dtype, dev, gen):
    """Batch normalisation over N, H, W per channel, eps 1e-5, momentum 0.1: fwd in training
    mode (batch statistics; the running ones updated), bwd (dx, dweight, dbias from the saved
    batch statistics; on a GPU, autograd may run cuDNN's backward instead), infer (the running
    statistics). Within 1e-4 of float64, relative to each output's largest element."""
    d = s.get("dir", "fwd")
    N, C, H, W = (num(s, k) for k in ("batch", "c", "h", "w"))
    off, spread = uniform(gen, 1, C, 1, 1, scale=2.0), uniform(gen, 1, C, 1, 1) + 1.25
    x32 = off + spread * uniform(gen, N, C, H, W)
    w32, b32 = uniform(gen, C, scale=0.5) + 1, uniform(gen, C, scale=0.5)
    rm32, rv32 = uniform(gen, C, scale=2.0), uniform(gen, C, scale=0.75) + 1.25
    dy32 = uniform(gen, N, C, H, W)
    x, w, b, dy = (t.to(dev) for t in (x32, w32, b32, dy32))
    rm, rv = rm32.to(dev), rv32.to(dev)
    X, Wd, Bd, DY = (t.double() for t in (x32, w32, b32, dy32))
    RM, RV = rm32.double(), rv32.double()
    if d == "fwd":
        run = lambda: F.batch_norm(x, rm, rv, w, b, True, 0.1, 1e-5)  # noqa: E731
        got = {"y": run(), "running_mean": rm, "running_var": rv}
        want = {"y": F.batch_norm(X, RM, RV, Wd, Bd, True, 0.1, 1e-5), "running_mean": RM,
                "running_var": RV}
    elif d == "infer":
        run = lambda: F.batch_norm(x, rm, rv, w, b, False, 0.1, 1e-5)  # noqa: E731
        got = {"y": run()}
        want = {"y": F.batch_norm(X, RM, RV, Wd, Bd, False, 0.1, 1e-5)}
    elif d == "bwd":
        _, mean, invstd = torch.ops.aten.native_batch_norm(x, w, b, rm, rv, True, 0.1, 1e-5)[:3]
        run = lambda: torch.ops.aten.native_batch_norm_backward(  # noqa: E731
            dy, x, w, rm, rv, mean, invstd, True, 1e-5, [True, True, True])
        got = dict(zip(("dx", "dweight", "dbias"), run()))
        Xg, Wg, Bg = (t.clone().requires_grad_() for t in (X, Wd, Bd))
        F.batch_norm(Xg, RM.clone(), RV.clone(), Wg, Bg, True, 0.1, 1e-5).backward(DY)
        want = {"dx": Xg.grad, "dweight": Wg.grad, "dbias": Bg.grad}
    else:
        raise Skip(f"no batchnorm dir {d}")
    errors = {k: (worst(spoil("batchnorm", got[k]), want[k], want[k].abs().max() + 1e-300), 1e-4)
              for k in want}
    return verdict(errors, "every element, float64"), run


def stream(s, dtype, dev, gen):
    """STREAM's kernels on n fp32 elements (q = 3), into preallocated arrays; copy exactly, the
    others within two roundings of their terms, the dot within 16 u (sqrt(n) + 1) of its terms'
    root sum of squares."""
    if "sms" in s:
        raise Skip("torch cannot hold a kernel to some of the GPU's SMs")
    kern, n = s.get("kernel", ""), num(s, "n")
    a32, b32, c32 = uniform(gen, n), uniform(gen, n), uniform(gen, n)
    a, b, c = a32.to(dev), b32.to(dev), c32.to(dev)
    A, B, Cd = a32.double(), b32.double(), c32.double()
    u = U["fp32"]
    kernels = {
        "copy": (lambda: c.copy_(a), A, torch.ones(n, dtype=torch.float64), 0.0),
        "scale": (lambda: torch.mul(c, 3.0, out=b), 3 * Cd, 3 * Cd.abs(), 2 * u),
        "add": (lambda: torch.add(a, b, out=c), A + B, A.abs() + B.abs(), 2 * u),
        "triad": (lambda: torch.add(b, c, alpha=3.0, out=a), B + 3 * Cd, B.abs() + 3 * Cd.abs(),
                  2 * u),
        "dot": (lambda: torch.dot(a, b), (A * B).sum(), (A * B).norm(),
                16 * u * (math.sqrt(n) + 1)),
    }
    if kern not in kernels:
        raise Skip(f"no STREAM kernel {kern}")
    run, want, scale, tol = kernels[kern]
    got = spoil("stream", run().reshape(-1))
    return verdict({kern: (worst(got, want.reshape(-1), scale + 1e-300), tol)},
                   "every element, float64"), run


def transfer(s, dtype, dev, gen):
    """One copy of `bytes` between host (pageable or pinned) and device, or within the device
    (d2d: twice the bytes moved, as pairbench counts them); checked byte for byte."""
    if dev.type != "cuda":
        raise Skip("a host<->device copy needs a GPU")
    d, host, nbytes = s.get("dir", ""), s.get("host", "pageable"), num(s, "bytes")
    src = torch.randint(0, 256, (nbytes,), dtype=torch.uint8, generator=gen)
    pinned = host == "pinned"
    if d == "h2d":
        src, dst = (src.pin_memory() if pinned else src), torch.empty(nbytes, dtype=torch.uint8, device=dev)
    elif d == "d2h":
        src, dst = src.to(dev), torch.empty(nbytes, dtype=torch.uint8, pin_memory=pinned)
    elif d == "d2d":
        src, dst = src.to(dev), torch.empty(nbytes, dtype=torch.uint8, device=dev)
    else:
        raise Skip(f"no transfer dir {d}")
    run = lambda: dst.copy_(src, non_blocking=pinned)  # noqa: E731
    run()
    torch.cuda.synchronize()
    same = torch.equal(dst.cpu() ^ (1 if FAULT == "transfer" else 0), src.cpu())
    return verdict({"bytes": (0.0 if same else 1.0, 0.0)}, "byte for byte"), run


# --- models -----------------------------------------------------------------------------------

def model_of(s):
    """pairbench's model (core/model.cpp) as torch modules: (module, input shape, classes,
    weight decay)."""
    nn = torch.nn
    name = s.get("model", "")
    if name == "mlp":
        return (nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(),
                              nn.Linear(1024, 10)), (784,), 10, 0.0)
    if name == "cnn":
        return (nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Flatten(), nn.Linear(4096, 10)), (3, 32, 32), 10, 0.0)
    image = num(s, "image", 224)
    if name == "resnet":
        class Block(nn.Module):
            def __init__(self):
                super().__init__()
                self.body = nn.Sequential(nn.Conv2d(64, 32, 1), nn.ReLU(),
                                          nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
                                          nn.Conv2d(32, 64, 1))

            def forward(self, x):
                return torch.relu(self.body(x) + x)
        return (nn.Sequential(nn.Conv2d(3, 64, 7, stride=2, padding=3), nn.ReLU(), nn.MaxPool2d(2),
                              Block(), Block(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                              nn.Linear(64, 10)), (3, image, image), 10, 0.0)
    if name == "resnet50":
        import torchvision
        return torchvision.models.resnet50(), (3, image, image), 1000, 1e-4
    raise Skip(f"no model {name}")


def train(s, dtype, dev, gen):
    """pairbench's training step (pass=train: forward, mean cross-entropy, backward, SGD with
    the shape's lr, momentum and weight decay, by default lr 0.01, momentum 0.9 and the model's
    weight decay, zero_grad(set_to_none=True)) or inference
    (pass=infer: forward under no_grad, batch norm on its running statistics); bf16, fp16 and
    tf32 as torch trains in them (torch.autocast(bfloat16); torch.autocast(float16) with a
    GradScaler from 2^16, as pairbench's fp16 step scales its loss; tf32 tensor cores). Checked
    against the same
    step in float64 from the same weights and batch: the loss, each parameter's gradient in norm
    and batch norm's running statistics (fp32: 1e-2 relative for the gradients, 0.1 with batch
    norm, whose ReLU kinks move fp32's gradients by percents; reduced precision: each gradient's
    norm within a factor of two); inference's logits relative to their norm (1e-4; 5e-2 in
    bf16 and fp16, 1e-2 in tf32)."""
    if dtype in ("fp16", "tf32") and dev.type != "cuda":
        raise Skip(f"pairbench has no {dtype} step on the {dev.type}")
    batch, infer = num(s, "batch"), s.get("pass", "train") == "infer"
    torch.manual_seed(gen.initial_seed())  # the model's initial weights
    model, shape, classes, wd = model_of(s)
    x32 = uniform(gen, batch, *shape)
    order = [3, 7, 0, 9, 1, 5, 8, 2, 6, 4]
    labels = torch.tensor([order[i % 10] % classes for i in range(batch)])
    has_bn = any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    low = dtype in ("bf16", "tf32", "fp16")
    ref = copy.deepcopy(model).double()
    layouts = [torch.contiguous_format] + ([torch.channels_last] if len(shape) == 3 else [])
    # The update's numbers as the case's shape has them (its name carries those that are not
    # the defaults).
    update = {"lr": num(s, "lr", 0.01), "momentum": num(s, "momentum", 0.9),
              "weight_decay": num(s, "weight_decay", wd)}
    return [train_in(layout, model, ref, x32, labels, shape, dtype, dev, update, infer, has_bn, low)
            for layout in layouts]


def train_in(layout, model, ref, x32, labels, shape, dtype, dev, update, infer, has_bn, low):
    """train()'s option in one layout: (its name, the check of its first step or inference,
    the call to time). A function of its own so that each option's closures keep their own
    model and batch (a closure in a loop would see the last layout's)."""
    m = copy.deepcopy(model).to(dev).to(memory_format=layout)
    x = x32.to(dev).contiguous(memory_format=layout) if len(shape) == 3 else x32.to(dev)
    y = labels.to(dev)
    opt = torch.optim.SGD(m.parameters(), **update)
    autocast = torch.autocast(dev.type, dtype=DTYPES[dtype], enabled=dtype in ("bf16", "fp16"))
    scaler = torch.amp.GradScaler(dev.type, init_scale=2.0 ** 16, enabled=dtype == "fp16")

    def forward():
        with autocast:
            return m(x)

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast:
            loss_ = F.cross_entropy(m(x), y)
        scaler.scale(loss_).backward()
        scaler.step(opt)
        scaler.update()
        return loss_

    def infer_call():
        with torch.no_grad():
            return forward()

    r = copy.deepcopy(ref)
    if infer:
        m.eval()
        r.eval()
        got = spoil("train", infer_call().float())
        with torch.no_grad():
            want = r(x32.double())
        tol = {"fp32": 1e-4, "bf16": 5e-2, "fp16": 5e-2, "tf32": 1e-2}[dtype]
        checked = verdict({"logits": (rel_norm(got, want), tol)}, "logits in norm, float64")
        run = infer_call
    else:
        m.train()
        r.train()
        opt.zero_grad(set_to_none=True)
        with autocast:
            loss_ = F.cross_entropy(m(x), y)
        loss_.backward()
        want_loss = F.cross_entropy(r(x32.double()), labels)
        want_loss.backward()
        want = float(want_loss.detach())
        errors = {"loss": (abs(float(spoil("train", loss_.detach().double().cpu())) - want)
                           / (abs(want) + 1),
                           {"fp32": 1e-5, "bf16": 5e-2, "fp16": 5e-2, "tf32": 1e-2}[dtype])}
        for (name, p), (_, q) in zip(m.named_parameters(), r.named_parameters()):
            if low:
                ratio = float(p.grad.double().norm()) / max(float(q.grad.norm()), 1e-300)
                errors[f"{name}.grad"] = (abs(math.log2(max(ratio, 1e-300))), 1.0)
            else:
                errors[f"{name}.grad"] = (rel_norm(p.grad, q.grad), 0.1 if has_bn else 1e-2)
        for (name, b), (_, q) in zip(m.named_buffers(), r.named_buffers()):
            if name.endswith(("running_mean", "running_var")):
                errors[name] = (rel_norm(b, q), 0.5 if low else 1e-3)
        checked = verdict(errors, "loss, gradients and running statistics, float64")
        opt.step()
        run = step
    return ("nchw" if layout == torch.contiguous_format else "channels_last", checked, run)


OPS = {"gemm": gemm, "conv": conv, "activation": activation, "softmax": softmax, "loss": loss,
       "batchnorm": batchnorm, "stream": stream, "transfer": transfer, "train": train}


def one(case, min_time):
    """The result record of one workload."""
    dev = torch.device("cuda" if case["device"] == "gpu" else "cpu")
    if dev.type == "cuda" and not torch.cuda.is_available():
        return {"status": "skipped", "message": "torch sees no GPU"}
    if case["op"] not in OPS:
        return {"status": "skipped", "message": f"the reference has no {case['op']}"}
    # The case's threads on the CPU; a GPU case's float64 check runs on every core.
    torch.set_num_threads(max(1, case["threads"]) if dev.type == "cpu" else os.cpu_count())
    math_mode(dev, case["dtype"])
    gen = torch.Generator().manual_seed(zlib.crc32(case["name"].encode()))
    try:
        built = OPS[case["op"]](case["shape"], case["dtype"], dev, gen)
        options = built if isinstance(built, list) else [(None, *built)]
        best = None
        for layout, checked, run in options:
            if checked["status"] != "ok":
                return {**checked, **({"layout": layout} if layout else {})}
            heavy = case["op"] == "train"
            median_s, min_s, runs = timed(run, dev, min_time, warmup=2 if heavy else 3,
                                          min_runs=3 if heavy else 5)
            r = {**checked, "median_s": median_s, "min_s": min_s, "runs": runs}
            if layout:
                r["layout"] = layout
            if best is None or median_s < best["median_s"]:
                best = r
        return best
    except Skip as e:
        return {"status": "skipped", "message": str(e)}
    except torch.cuda.OutOfMemoryError as e:
        return {"status": "skipped", "message": f"out of GPU memory: {str(e).splitlines()[0]}"}
    except torch.AcceleratorError:
        raise  # the CUDA context is lost: main says so for the cases left
    except NotImplementedError as e:
        return {"status": "skipped", "message": f"torch cannot run it: {str(e).splitlines()[0]}"}
    except RuntimeError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "not implemented for" in first or "Could not run" in first:
            return {"status": "skipped", "message": f"torch cannot run it: {first}"}
        return {"status": "error", "message": f"torch raised: {first}"}
    finally:
        if dev.type == "cuda":
            torch.cuda.empty_cache()  # the next case starts from free memory


def build_info():
    cfg = torch.__config__.show()
    found = {key: m.group(1) for key, pat in (("onednn", r"MKL-DNN v(\S+)"),
                                               ("mkl", r"Math Kernel Library Version (\S+)"))
             if (m := re.search(pat, cfg))}
    info = {"torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, **found}
    return {k: v for k, v in info.items() if v is not None}


def main(argv):
    if len(argv) != 2:
        print("usage: torch_reference.py JOBS.json", file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        job = json.load(f)
    results, lost = {}, None
    for i, case in enumerate(job["cases"]):
        t0 = time.perf_counter()
        if lost and case["device"] == "gpu":
            r = {"status": "skipped", "message": f"an earlier CUDA error lost the context: {lost}"}
        else:
            try:
                r = one(case, job["min_time"])
            except torch.AcceleratorError as e:
                lost = str(e).splitlines()[0] if str(e) else "CUDA error"
                r = {"status": "error", "message": f"CUDA error: {lost}"}
        results[case["name"]] = r
        said = (f"{1e3 * r['median_s']:.3f} ms" if r["status"] == "ok"
                else r.get("message", ""))
        print(f"torch_reference: [{i + 1}/{len(job['cases'])}] {case['name']}: {r['status']} "
              f"{said} ({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)
    json.dump({"torch": torch.__version__, "build": build_info(), "cases": results}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
