#!/usr/bin/env python3
"""PyTorch's CPU training step of pairbench's MLP (784-1024-1024-10, ReLU) or CNN (conv 3->32,
ReLU, pool, conv 32->64, ReLU, pool, linear 4096->10), for
scripts/vs_torch_train: forward, cross-entropy, backward, SGD with momentum (zero_grad each
step), and inference (forward under no_grad), at each batch size given. Runs in a virtual
environment of its own with torch from PyPI. Prints one JSON object: median ms per step."""
import argparse
import json

import torch

from torch_timing import median_ms


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, nargs="+", required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--min-time", type=float, default=1.0)
    ap.add_argument("--model", choices=["mlp", "cnn"], default="mlp")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    if a.model == "mlp":
        model = torch.nn.Sequential(torch.nn.Linear(784, 1024), torch.nn.ReLU(),
                                    torch.nn.Linear(1024, 1024), torch.nn.ReLU(),
                                    torch.nn.Linear(1024, 10))
        shape = (784,)
    else:
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(),
                                    torch.nn.MaxPool2d(2), torch.nn.Conv2d(32, 64, 3, padding=1),
                                    torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
                                    torch.nn.Linear(4096, 10))
        shape = (3, 32, 32)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    out = {"torch": torch.__version__, "threads": torch.get_num_threads(), "train_ms": {},
           "infer_ms": {}}
    for b in a.batches:
        x = torch.rand(b, *shape) * 2 - 1
        y = torch.randint(0, 10, (b,))

        def step():
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()

        def infer():
            with torch.no_grad():
                model(x)

        out["train_ms"][str(b)] = median_ms(step, a.min_time)
        out["infer_ms"][str(b)] = median_ms(infer, a.min_time)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
