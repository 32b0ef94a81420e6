#!/usr/bin/env python3
"""How far PyTorch's own fp32 gradients of torchvision's ResNet-50 (or, with --dtype bf16, its
autocast bf16 ones) lie from its float64 ones at initialisation: the conditioning that sets
pairbench's bound on a ResNet-50 training step (see "Verification" in the README). One batch of uniform inputs, the same weights in both precisions,
cross-entropy on random labels, one backward pass; per parameter tensor, |g32 - g64| / |g64|.
Runs in build/venv-torch (torch and torchvision from PyPI):
  build/venv-torch/bin/python scripts/torch_conditioning.py --batch 8 --image 64"""
import argparse
import copy
import statistics

import torch
import torchvision


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--image", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    m32 = torchvision.models.resnet50()
    m64 = copy.deepcopy(m32).double()
    x = torch.rand(a.batch, 3, a.image, a.image) * 2 - 1
    y = torch.randint(0, 1000, (a.batch,))
    for model, xx, low in ((m32, x, a.dtype == "bf16"), (m64, x.double(), False)):
        model.train()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=low):
            loss = torch.nn.functional.cross_entropy(model(xx), y)
        loss.backward()
    errors = {n: ((p.grad.double() - q.grad).norm() / q.grad.norm()).item()
              for (n, p), (_, q) in zip(m32.named_parameters(), m64.named_parameters())}
    print(f"torch {torch.__version__}, batch {a.batch}, {a.image}x{a.image}: relative error of "
          f"each gradient tensor in norm, {a.dtype} against float64")
    print(f"  median {statistics.median(errors.values()):.4f}, "
          f"max {max(errors.values()):.4f} ({max(errors, key=errors.get)})")
    for stage in ("conv1", "layer1", "layer2", "layer3", "layer4", "fc"):
        v = [e for n, e in errors.items() if n.startswith(stage)]
        print(f"  {stage}: median {statistics.median(v):.4f}, max {max(v):.4f}")


if __name__ == "__main__":
    main()
