"""Attack speed, side by side on the same model and batch (CPU unless CUDA is available).

Sections (`--only pgd,free,eval`, default all):
  pgd   (a) our PGD-k / (k x one forward + backward to the input only), goal <= 1.05;
        (b) our PGD / torchattacks' PGD, goal <= 1.0 (torchattacks returns no success mask,
            so it is also shown with the one forward that scoring its output needs);
        (c) a per-example PGD loop, for scale;
        (d) the opt-in fast path (bf16 autocast + channels_last), CUDA only.
  free  "free" adversarial training vs natural training for the same passes, goal <= 1.2.
  eval  `evaluate_robustness` (5 epsilons x 3 attacks, skipping broken examples) vs running
        every attack on the whole set at every epsilon, with the accuracies compared.
Timings: warm-up, then the methods interleaved round-robin for `--repeats` rounds (fair on a
shared machine), median and spread (min-max) per method. On CPU the default clock is the
thread's CPU time with one torch thread (`--clock cpu --threads 1`): on a machine shared with
other jobs, wall time mostly measures the neighbours, CPU time measures the work. On CUDA the
clock is wall time after synchronising.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
import torchattacks
from torch import nn

from nettle.attack import create_attack, evaluate_robustness

K, BATCH, LOOP_SAMPLE = 10, 128, 16
CLOCK = {"cpu": time.thread_time, "wall": time.perf_counter}
clock = time.perf_counter


class Block(nn.Module):
    """Basic residual block: two 3x3 conv-BN, ReLU, identity or 1x1 shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.short = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.short(x))


def small_resnet() -> nn.Module:
    """A small ResNet for 3x32x32 inputs (widths 16-32-64, one block per stage)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, 1, 1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        Block(16, 16, 1),
        Block(16, 32, 2),
        Block(32, 64, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 10),
    ).eval()


def timed(methods: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Warm each method up once, then time them round-robin; seconds per method."""
    for fn in methods.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, fn in methods.items():
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            t0 = clock()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times[name].append(clock() - t0)
    return times


def _row(name: str, t: list[float], scale: float = 1.0) -> str:
    med = statistics.median(t) * scale
    return (
        f"  {name:<44} {med * 1e3:9.1f} ms  ({min(t) * scale * 1e3:.1f}-{max(t) * scale * 1e3:.1f})"
    )


def pgd_benches(repeats: int) -> None:
    model = small_resnet()
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(BATCH, 3, 32, 32, generator=g), torch.randint(0, 10, (BATCH,), generator=g)
    options = {"eps": 8 / 255, "alpha": 2 / 255, "steps": K}

    def floor() -> None:
        for _ in range(K):
            xi = x.detach().requires_grad_(True)
            torch.autograd.grad(F.cross_entropy(model(xi), y), xi)

    ours = create_attack("pgd", model, seed=0, **options)
    theirs = torchattacks.PGD(model, **options)

    def theirs_scored() -> None:
        adv = theirs(x, y)
        with torch.no_grad():
            model(adv).argmax(1)

    def ours_perturb_only() -> None:
        ours.generator = torch.Generator().manual_seed(0)
        ours.perturb(x, y, None)

    def loop() -> None:
        for i in range(LOOP_SAMPLE):
            ours(x[i : i + 1], y[i : i + 1])

    t = timed(
        {
            "floor": floor,
            "ours": lambda: ours(x, y),
            "ours_perturb": ours_perturb_only,
            "theirs": lambda: theirs(x, y),
            "theirs_scored": theirs_scored,
            "loop": loop,
        },
        repeats,
    )
    m = {k: statistics.median(v) for k, v in t.items()}
    dev = "CUDA" if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} thread(s)"
    dev += ", thread CPU time" if clock is time.thread_time else ", wall time"
    print(f"PGD-{K} Linf, batch {BATCH}, 3x32x32, small ResNet ({dev}); median (min-max)")
    print(_row(f"{K} x (forward + backward to the input)", t["floor"]))
    print(_row("ours (attack + success mask + distances)", t["ours"]))
    print(_row("ours, perturb only", t["ours_perturb"]))
    print(_row("torchattacks PGD", t["theirs"]))
    print(_row("torchattacks PGD + one forward to score", t["theirs_scored"]))
    print(_row(f"per-example loop (x{BATCH}/{LOOP_SAMPLE})", t["loop"], BATCH / LOOP_SAMPLE))
    loop_full = m["loop"] * BATCH / LOOP_SAMPLE
    print(f"  (a) ours / floor                  {m['ours'] / m['floor']:.3f}  (goal <= 1.05)")
    print(f"      ours perturb only / floor     {m['ours_perturb'] / m['floor']:.3f}")
    print(f"  (b) ours / torchattacks           {m['ours'] / m['theirs']:.3f}  (goal <= 1.0)")
    print(f"      ours / (torchattacks + score) {m['ours'] / m['theirs_scored']:.3f}")
    print(f"  (c) per-example loop / ours       {loop_full / m['ours']:.1f}x slower")
    counted = ours(x, y)
    print(
        f"  passes counted by the attack: {counted.forwards / BATCH:g} forward and "
        f"{counted.backwards / BATCH:g} backward per example ({K} steps + 1 scoring forward)"
    )
    fast_path(model, x, y, options, repeats)


def fast_path(model: nn.Module, x: torch.Tensor, y: torch.Tensor, options: dict, repeats: int):
    """(d) bf16 autocast + channels_last vs fp32, CUDA only."""
    if not torch.cuda.is_available():
        print("  (d) fast path (bf16 autocast + channels_last): skipped, no CUDA device")
        return
    plain_model = small_resnet().cuda()
    fast_model = small_resnet().cuda().to(memory_format=torch.channels_last)
    xc, yc = x.cuda(), y.cuda()
    plain = create_attack("pgd", plain_model, seed=0, **options)
    fast = create_attack(
        "pgd", fast_model, seed=0, autocast=torch.bfloat16, channels_last=True, **options
    )
    t = timed({"fp32": lambda: plain(xc, yc), "fast": lambda: fast(xc, yc)}, repeats)
    print(_row("CUDA fp32", t["fp32"]))
    print(_row("CUDA bf16 autocast + channels_last", t["fast"]))
    ratio = statistics.median(t["fast"]) / statistics.median(t["fp32"])
    print(f"  (d) fast path / fp32              {ratio:.3f}")


def free_vs_natural(repeats: int) -> None:
    from torch.utils.data import TensorDataset

    from nettle.config import AdversarialConfig, TrainConfig
    from nettle.train.adversarial import create_adversarial
    from nettle.train.loop import Trainer

    g = torch.Generator().manual_seed(0)
    data = TensorDataset(
        torch.rand(1024, 3, 32, 32, generator=g), torch.randint(0, 10, (1024,), generator=g)
    )
    cfg = TrainConfig(epochs=1, device="cpu", tensorboard=False, deterministic=False)
    natural = Trainer(
        small_resnet().train(), data, None, cfg.model_copy(update={"epochs": 4}), batch_size=BATCH
    )
    free = Trainer(
        small_resnet().train(),
        data,
        None,
        cfg,
        batch_size=BATCH,
        objective=create_adversarial(AdversarialConfig(mode="free", replays=4)),
    )

    def run(trainer: Trainer) -> None:
        trainer.fit()
        trainer.state.update(epoch=0, batch=0)

    t = timed({"natural": lambda: run(natural), "free": lambda: run(free)}, repeats)
    ratio = statistics.median(t["free"]) / statistics.median(t["natural"])
    print(f"free training (1 epoch x 4 replays) / natural (4 epochs): {ratio:.3f} (goal <= 1.2)")


def _digits_model() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """simple-cnn trained briefly on digits, and the digits test set."""
    from nettle.config import TrainConfig
    from nettle.models import create_model
    from nettle.train.data import create_dataset, get_dataset_info
    from nettle.train.loop import Trainer

    info = get_dataset_info("digits")
    torch.manual_seed(0)
    model = create_model("simple-cnn", in_channels=1, mean=info.mean, std=info.std)
    cfg = TrainConfig(epochs=5, device="cpu", tensorboard=False)
    Trainer(model, create_dataset("digits"), None, cfg, batch_size=64).fit()
    x, y = create_dataset("digits", "test").tensors
    return model.eval(), x, y


def evaluation() -> None:
    model, x, y = _digits_model()
    eps = [0.02, 0.05, 0.1, 0.2, 0.3]
    attacks = {"fgsm": {}, "pgd": {"steps": 5, "random_start": False}, "bim": {"steps": 5}}
    t0 = time.perf_counter()
    res = evaluate_robustness(model, (x, y), attacks, eps, checks=False, recheck=0)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    fast = evaluate_robustness(
        model, (x, y), attacks, eps, checks=False, recheck=0, per_attack=False
    )
    t_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    with torch.no_grad():
        clean = model(x).argmax(1) == y
    worst = {e: ~clean for e in eps}
    for name, options in attacks.items():
        for e in eps:
            opts = {**options, "eps": e} | ({"alpha": e / 4} if name != "fgsm" else {})
            worst[e] = worst[e] | create_attack(name, model, seed=0, **opts)(x, y).success
    t_full = time.perf_counter() - t0

    def same(r) -> bool:
        return all(abs(r.worst[e] - (~worst[e]).float().mean().item()) <= 1 / len(y) for e in eps)

    print("evaluate_robustness, trained simple-cnn on 360 digits, 5 eps x 3 attacks:")
    print(f"  exact per-attack curves: full / ours = {t_full / t_ours:.2f}x, same: {same(res)}")
    print(f"  worst case only:         full / ours = {t_full / t_fast:.2f}x, same: {same(fast)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="pgd,free,eval", help="sections: pgd,free,eval")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--clock", choices=sorted(CLOCK), default="cpu", help="CPU runs only")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on CPU")
    args = parser.parse_args()
    global clock
    if not torch.cuda.is_available():
        clock = CLOCK[args.clock]
        torch.set_num_threads(args.threads)
    sections = {s.strip() for s in args.only.split(",")}
    print("load average (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    if "pgd" in sections:
        pgd_benches(args.repeats)
    if "free" in sections:
        free_vs_natural(args.repeats)
    if "eval" in sections:
        evaluation()
    print("load average (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
