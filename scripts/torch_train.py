#!/usr/bin/env python3
"""PyTorch's CPU training step of pairbench's MLP (784-1024-1024-10, ReLU), CNN (conv 3->32,
ReLU, pool, conv 32->64, ReLU, pool, linear 4096->10) or ResNet-50 (torchvision's, on
--image x --image inputs, SGD with weight decay 1e-4), for scripts/vs_torch_train: forward,
cross-entropy, backward, SGD with momentum (zero_grad(set_to_none=True) each step), and
inference (forward under no_grad), at each batch size given. The conv models' maps NCHW and
channels_last (the faster of the two is torch's figure: channels_last ran the CNN's inference
four times faster than NCHW on the development VM). Runs in a virtual environment of
its own with torch from PyPI. --dtype bf16: mixed precision as torch.autocast(dtype=bfloat16)
runs it (the forward pass and the loss under autocast; fp32 weights and update). --device cuda:
on the GPU, as users train there (cudnn.benchmark; fp16 with a GradScaler from 2^16, tf32 with
allow_tf32, fp32 without it), each call timed to the GPU's end (synchronized).
Prints one JSON object: median ms per step."""
import argparse
import json

import torch

from torch_timing import median_ms


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, nargs="+", required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--min-time", type=float, default=1.0)
    ap.add_argument("--model", choices=["mlp", "cnn", "resnet50"], default="mlp")
    ap.add_argument("--image", type=int, default=224)
    ap.add_argument("--dtype", choices=["fp32", "bf16", "fp16", "tf32"], default="fp32")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--passes", choices=["both", "train", "infer"], default="both",
                    help="time the step, inference, or both (the JSON has only what was timed)")
    a = ap.parse_args()
    if a.device == "cpu" and a.dtype in ("fp16", "tf32"):
        ap.error(f"--dtype {a.dtype} is the GPU's (--device cuda)")
    if a.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: torch sees no GPU")
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = a.dtype == "tf32"
    torch.backends.cudnn.benchmark = a.device == "cuda"
    torch.manual_seed(0)
    if a.model == "mlp":
        model = torch.nn.Sequential(torch.nn.Linear(784, 1024), torch.nn.ReLU(),
                                    torch.nn.Linear(1024, 1024), torch.nn.ReLU(),
                                    torch.nn.Linear(1024, 10))
        shape = (784,)
    elif a.model == "resnet50":
        import torchvision
        model = torchvision.models.resnet50()
        shape = (3, a.image, a.image)
    else:
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(),
                                    torch.nn.MaxPool2d(2), torch.nn.Conv2d(32, 64, 3, padding=1),
                                    torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
                                    torch.nn.Linear(4096, 10))
        shape = (3, 32, 32)
    big = a.model == "resnet50"
    model.to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9,
                          weight_decay=1e-4 if big else 0)
    loss_fn = torch.nn.CrossEntropyLoss()
    low = {"bf16": torch.bfloat16, "fp16": torch.float16}
    autocast = torch.autocast(a.device, dtype=low.get(a.dtype, torch.bfloat16),
                              enabled=a.dtype in low)
    scaler = torch.amp.GradScaler(a.device, init_scale=2.0 ** 16, enabled=a.dtype == "fp16")

    def synced(fn):  # on the GPU, each call until the GPU is done
        if a.device != "cuda":
            return fn

        def call():
            fn()
            torch.cuda.synchronize()
        return call
    out = {"torch": torch.__version__, "threads": torch.get_num_threads(), "dtype": a.dtype,
           "device": torch.cuda.get_device_name() if a.device == "cuda" else "cpu",
           "train_ms": {},
           "infer_ms": {}, "layouts": {}}
    conv = len(shape) == 3
    layouts = [torch.contiguous_format, torch.channels_last] if conv else [torch.contiguous_format]
    runs = {"warmup": 3 if a.device == "cuda" else 1, "min_runs": 3} if big else {}
    for b in a.batches:
        for layout in layouts:
            model.to(memory_format=layout)
            x = (torch.rand(b, *shape) * 2 - 1).contiguous(memory_format=layout) if conv else \
                torch.rand(b, *shape) * 2 - 1
            x = x.to(dev)
            y = torch.randint(0, 1000 if big else 10, (b,)).to(dev)

            def step():
                opt.zero_grad(set_to_none=True)
                with autocast:
                    loss = loss_fn(model(x), y)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()

            def infer():
                with torch.no_grad(), autocast:
                    model(x)

            timed = {}
            if a.passes != "infer":
                model.train()
                timed["train_ms"] = median_ms(synced(step), a.min_time, **runs)
            if a.passes != "train":
                model.eval()
                timed["infer_ms"] = median_ms(synced(infer), a.min_time, **runs)
            name = "channels_last" if layout == torch.channels_last else "nchw"
            out["layouts"].setdefault(str(b), {})[name] = timed
            for kind, ms in timed.items():
                out[kind][str(b)] = min(ms, out[kind].get(str(b), ms))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
