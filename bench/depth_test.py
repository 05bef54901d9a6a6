"""Depth test: how deep a plain conv net (no residuals, no batch norm) still trains, ReLU vs ReLog.

The research log behind nettle's logic units ("newlogic", 5 Oct 2019) claims that a ReLog
network is less sensitive to initialisation: a forward signal passed 100 layers with ReLog
but exploded after 28 with ReLU. This bench asks the training question on the digits data:
for each depth (conv layers of 3x3, `--width` channels, padding 1, each followed by the unit,
then global average pooling and a linear classifier), train a fixed small budget (`--steps`
Adam steps, lr `--lr`, batch 64) and measure test accuracy. A net "trains" when its test
accuracy is above `--threshold` (20%; chance is 10%). It prints one row per depth and unit,
then the deepest depth that trains and the first depth that does not, per unit.

The unit is put in by `nettle.models.units.apply_units` (the same surgery as `model.units`);
`--init default` keeps PyTorch's initialisation (kaiming-uniform, a = sqrt(5)), `--init he`
draws He-normal weights (fan_in, gain sqrt(2)), `--init data` starts from He-normal and then
scales each layer to unit output variance on 64 training images (LSUV,
`nettle.train.data_init`, as `model.init: data`). Each (depth, unit) starts from the same seed.
It also prints `os.getloadavg()`: on a busy machine only the times change, not the accuracies.

    python bench/depth_test.py                       # depths 10 20 40 60 80 100, He init
    python bench/depth_test.py --depths 10,100 --units relu,relog,relog1p --init data
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn.functional as F
from torch import nn

from nettle.config import UnitRule
from nettle.models.units import apply_units
from nettle.train.data import create_dataset
from nettle.train.data_init import data_init


def plain_net(depth: int, width: int, classes: int = 10, init: str = "default") -> nn.Module:
    """`depth - 1` conv3x3-ReLU layers, global average pooling, a linear layer: `depth` layers."""
    layers: list[nn.Module] = []
    c = 1
    for _ in range(depth - 1):
        layers += [nn.Conv2d(c, width, 3, padding=1), nn.ReLU()]
        c = width
    net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, classes))
    if init in ("he", "data"):
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
    return net


def tensors(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    data = create_dataset("digits", split)
    xs, ys = zip(*(data[i] for i in range(len(data))))
    return torch.stack(xs), torch.tensor(ys)


def train_and_test(net: nn.Module, train, test, steps: int, lr: float, seed: int) -> float:
    """Adam for `steps` batches of 64 drawn with a seeded generator; test accuracy (0..1)."""
    x, y = train
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    for _ in range(steps):
        idx = torch.randint(len(x), (64,), generator=gen)
        loss = F.cross_entropy(net(x[idx]), y[idx])
        if not torch.isfinite(loss):
            return float("nan")
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        return int((net(test[0]).argmax(1) == test[1]).sum()) / len(test[1])  # exact


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--depths", default="10,20,40,60,80,100")
    p.add_argument("--units", default="relu,relog", help="relu, relog, relog1p")
    p.add_argument(
        "--relog", default="10,0.01,2", help="b,eps,c of relog (10,0.01,2; 10,1,0 is log10(x+1))"
    )
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--init", choices=["default", "he", "data"], default="he")
    p.add_argument("--threshold", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    depths = [int(d) for d in args.depths.split(",")]
    units = args.units.split(",")
    relog = dict(zip(("b", "eps", "c"), (float(v) for v in args.relog.split(","))))
    train, test = tensors("train"), tensors("test")
    print(f"load average before: {os.getloadavg()}")
    print(
        f"plain conv nets on digits, width {args.width}, init {args.init}, {args.steps} Adam "
        f"steps (lr {args.lr}, batch 64), seed {args.seed}; relog b,eps,c = {args.relog}; "
        f"trains = test acc > {100 * args.threshold:.0f}%"
    )
    print(f"{'depth':>5} {'unit':>8} {'test acc %':>10} {'seconds':>8}")
    results: dict[str, dict[int, float]] = {u: {} for u in units}
    for depth in depths:
        for unit in units:
            torch.manual_seed(args.seed)
            net = plain_net(depth, args.width, init=args.init)
            if unit != "relu":
                apply_units(net, [UnitRule(unit=unit, **(relog if unit == "relog" else {}))])
            if args.init == "data":
                data_init(net, train[0], 64, seed=args.seed)
            t0 = time.perf_counter()
            acc = train_and_test(net, train, test, args.steps, args.lr, args.seed)
            results[unit][depth] = acc
            print(f"{depth:>5} {unit:>8} {100 * acc:>10.1f} {time.perf_counter() - t0:>8.1f}")
    print()
    for unit in units:
        ok = [d for d in depths if results[unit][d] > args.threshold]
        stops = [d for d in depths if not results[unit][d] > args.threshold]
        deepest = max(ok) if ok else "none"
        first_fail = min(stops) if stops else f"none up to {max(depths)}"
        print(f"{unit}: deepest that trains {deepest}; first depth that does not {first_fail}")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
