"""Attack speed, side by side on the same model and batch (CPU unless CUDA is available).

(a) our PGD-k time / (k x one forward + backward to the input only): the eager floor, goal
    <= 1.05; (b) our PGD vs torchattacks' PGD, goal <= 1.0 on CPU; (c) a per-example PGD loop
    for scale; (d) an opt-in fast path (bf16 autocast + channels_last), CUDA only;
(e) "free" adversarial training vs natural training for the same number of passes, goal <= 1.2;
(f) `evaluate_robustness` (5 epsilons x 3 attacks, skipping broken examples) vs running every
    attack on the whole set at every epsilon, with the accuracies compared.
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F
import torchattacks
from torch import nn

from nettle.attack import create_attack, evaluate_robustness

K, BATCH, REPEATS = 10, 128, 3


def small_resnet() -> nn.Module:
    torch.manual_seed(0)

    def block(c_in, c_out, stride):
        return nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()
        )

    return nn.Sequential(
        block(3, 32, 1),
        block(32, 64, 2),
        block(64, 128, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(128, 10),
    ).eval()


def _median(fn) -> float:
    fn()
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def pgd_benches(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    def floor():
        for _ in range(K):
            xi = x.detach().requires_grad_(True)
            torch.autograd.grad(F.cross_entropy(model(xi), y), xi)

    ours = create_attack("pgd", model, eps=8 / 255, alpha=2 / 255, steps=K, seed=0)
    theirs = torchattacks.PGD(model, eps=8 / 255, alpha=2 / 255, steps=K)
    t_floor = _median(floor)
    t_ours = _median(lambda: ours(x, y))
    t_theirs = _median(lambda: theirs(x, y))
    per = create_attack("pgd", model, eps=8 / 255, alpha=2 / 255, steps=K, seed=0)
    t_loop = _median(lambda: [per(x[i : i + 1], y[i : i + 1]) for i in range(32)]) * BATCH / 32
    print(f"PGD-{K}, batch {BATCH}, 3x32x32, small ResNet-style CNN")
    print(f"  ours / (k x fwd+bwd to input): {t_ours / t_floor:.3f}   (goal <= 1.05)")
    print(f"  ours / torchattacks:           {t_ours / t_theirs:.3f}   (goal <= 1.0)")
    print(f"  per-example loop / ours:       {t_loop / t_ours:.1f}x slower (extrapolated from 32)")
    if torch.cuda.is_available():
        m = model.cuda().to(memory_format=torch.channels_last)
        xc, yc = x.cuda().to(memory_format=torch.channels_last), y.cuda()
        fast = create_attack("pgd", m, eps=8 / 255, alpha=2 / 255, steps=K, seed=0)

        def bf16():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                fast(xc, yc)

        plain = create_attack("pgd", model.cuda(), eps=8 / 255, alpha=2 / 255, steps=K, seed=0)
        print(
            f"  bf16+channels_last / fp32 (CUDA): {_median(bf16) / _median(lambda: plain(x.cuda(), y.cuda())):.3f}"
        )
    else:
        print("  fast path (bf16 autocast, channels_last): skipped, no CUDA device")


def free_vs_natural() -> None:
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
    t_nat = _median(lambda: natural.fit() and natural.state.update(epoch=0, batch=0))
    free = Trainer(
        small_resnet().train(),
        data,
        None,
        cfg,
        batch_size=BATCH,
        objective=create_adversarial(AdversarialConfig(mode="free", replays=4)),
    )
    t_free = _median(lambda: free.fit() and free.state.update(epoch=0, batch=0))
    print(
        f"free training (1 epoch x 4 replays) / natural (4 epochs): {t_free / t_nat:.3f}   (goal <= 1.2)"
    )


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

    def same(r):
        return all(abs(r.worst[e] - (~worst[e]).float().mean().item()) <= 1 / len(y) for e in eps)

    print("evaluate_robustness, trained simple-cnn on 360 digits, 5 eps x 3 attacks:")
    print(
        f"  exact per-attack curves: full / ours = {t_full / t_ours:.2f}x, same worst case: {same(res)}"
    )
    print(
        f"  worst case only:         full / ours = {t_full / t_fast:.2f}x, same worst case: {same(fast)}"
    )


def main() -> None:
    model = small_resnet()
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(BATCH, 3, 32, 32, generator=g), torch.randint(0, 10, (BATCH,), generator=g)
    pgd_benches(model, x, y)
    free_vs_natural()
    evaluation()


if __name__ == "__main__":
    main()
