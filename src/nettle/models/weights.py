"""Pretrained weights: `model.weights` read safely, renamed, loaded with a report, verified.

A weights file is a plain state dict saved with `torch.save(model.state_dict(), path)` or a
nettle checkpoint (its "model" entry); either is read with `weights_only=True`, so a file
can never run code. Its names are renamed by `model.weights_map` (keys dropped by `ignore`
prefixes, `strip_prefix`, prefix `rename`s, more of them from a YAML `file`, `add_prefix`),
then matched to the whole model or to the network inside its input wrapper
(`nettle.models.factory.unwrap`), whichever takes more of them, so a torchvision state dict
fits `torchvision:resnet18` with or without a `Normalize` in front. Tensors whose name and
shape fit are loaded; the `WeightsReport` lists the model's tensors the file lacks (missing),
the file's the model lacks (unexpected) and those of another shape (reshaped). A file of
which nothing fits is refused.

`model.verify: {inputs, outputs, atol}` runs the network the weights went into (eval mode,
no gradients) on the saved inputs and refuses the weights when an output differs from the
saved ones by more than `atol`: proof that the file, the renames and the model definition
agree before any training.

`nettle.models.build.resolve_weights(cfg)` runs these checks when a run is planned and writes
the file's sha256 into `model.weights_sha256`, so the run's id names the exact weights; a file
that changed afterwards is refused when the run builds its model.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nettle.config import ModelConfig
from nettle.files import file_sha256
from nettle.models.factory import unwrap
from nettle.safe_yaml import YAMLInputError, load_yaml_file
from nettle.train.checkpoint import load_checkpoint

__all__ = [
    "WeightsReport",
    "file_sha256",
    "load_pretrained",
    "load_state",
    "map_keys",
    "read_weights",
    "verify_outputs",
]

_log = logging.getLogger(__name__)


@dataclass
class WeightsReport:
    """What `load_state` loaded from a weights file, and what it could not."""

    path: str
    sha256: str
    into: str  # "" (the whole model) or "net." (the network inside the input wrapper)
    loaded: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    reshaped: list[str] = field(default_factory=list)
    verify: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _load(path: Path) -> Any:
    with warnings.catch_warnings():  # torch warns about pickles it did not write
        warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
        return torch.load(path, map_location="cpu", weights_only=True)


def read_weights(path: str | Path, where: str = "model.weights") -> dict[str, torch.Tensor]:
    """The state dict in `path`: a plain one or a nettle checkpoint's "model" entry.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a file `torch.load(weights_only=True)` cannot read (the reason comes from
            `nettle.train.checkpoint.load_checkpoint`), or one that holds no mapping of
            names to tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{where}: {path}: no such file")
    with torch.device("cpu"):  # a meta-device context must not reach the loaded tensors
        try:
            obj = _load(path)
        except Exception:  # a broken or hostile file: load_checkpoint says why, in one line
            try:
                load_checkpoint(path)
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
            raise
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    named = isinstance(obj, dict) and obj and all(isinstance(k, str) for k in obj)
    if not named or not all(
        isinstance(v, torch.Tensor) or k.endswith("_extra_state") for k, v in obj.items()
    ):
        raise ValueError(
            f"{where}: {path}: holds no state dict (a mapping of names to tensors, as saved by "
            "torch.save(model.state_dict(), path)) nor a nettle checkpoint"
        )
    return obj


def _renames(rules: ModelConfig.WeightsMap, where: str) -> dict[str, str]:
    renames = dict(rules.rename)
    if rules.file is None:
        return renames
    try:
        extra = load_yaml_file(Path(rules.file))
    except (YAMLInputError, OSError) as exc:
        raise ValueError(f"{where}_map.file: {exc}") from None
    if not isinstance(extra, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in extra.items()
    ):
        raise ValueError(f"{where}_map.file: {rules.file}: expected a mapping of old: new prefixes")
    return renames | extra


def map_keys(
    state: dict[str, torch.Tensor],
    rules: ModelConfig.WeightsMap | None,
    where: str = "model.weights",
) -> dict[str, torch.Tensor]:
    """`state` with its names renamed by `rules` (see `ModelConfig.WeightsMap`).

    Example:
        >>> rules = ModelConfig.WeightsMap(strip_prefix="module.", add_prefix="net.")
        >>> list(map_keys({"module.fc.weight": torch.zeros(1)}, rules))
        ['net.fc.weight']
    """
    if rules is None:
        return dict(state)
    renames = sorted(_renames(rules, where).items(), key=lambda kv: -len(kv[0]))
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if any(key.startswith(p) for p in rules.ignore):
            continue
        name = key.removeprefix(rules.strip_prefix) if rules.strip_prefix else key
        old, new = next(((o, n) for o, n in renames if name.startswith(o)), ("", ""))
        name = rules.add_prefix + new + name[len(old) :]
        if name in out:
            raise ValueError(f"{where}_map: two of the file's tensors become {name!r}")
        out[name] = value
    return out


def _fit(own: dict[str, Any], state: dict[str, Any]) -> list[str]:
    """The names of `state` that `own` has with the same shape (extra states by name)."""
    return [k for k, v in state.items() if k in own and _shape(own[k]) == _shape(v)]


def _shape(value: Any) -> tuple[int, ...] | None:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else None


def load_state(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    path: str | Path,
    where: str = "model.weights",
    sha256: str = "",
) -> WeightsReport:
    """Load the tensors of `state` that fit `model` (or the network inside its wrapper).

    Raises:
        ValueError: none of the tensors fits (the message shows a name of each side).
    """
    prefix, inner = unwrap(model)
    targets = [("", model, model.state_dict())]
    if prefix:
        targets.append((prefix, inner, inner.state_dict()))
    fits = [(p, m, own, _fit(own, state)) for p, m, own in targets]
    into, target, own, fitting = max(fits, key=lambda t: len(t[3]))  # the first on a tie
    if not fitting:
        mine, theirs = next(iter(own), "(none)"), next(iter(state))
        raise ValueError(
            f"{where}: {path}: none of its {len(state)} tensors fits the model (the file has "
            f"e.g. {theirs!r}, the model {mine!r}); rename them with {where}_map"
        )
    target.load_state_dict({k: state[k] for k in fitting}, strict=False)
    report = WeightsReport(str(path), sha256, into, len(fitting))
    report.missing = [k for k in own if k not in state]
    report.unexpected = [k for k in state if k not in own]
    report.reshaped = [
        f"{k} {_shape(state[k])} vs {_shape(v)}"
        for k, v in own.items()
        if k in state and _shape(state[k]) != _shape(v)
    ]
    return report


def _read_tensor(path: str, what: str) -> torch.Tensor:
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{what}: {file}: no such file")
    try:
        with torch.device("cpu"):
            value = _load(file)
    except Exception as exc:
        why = next(iter(str(exc).strip().splitlines()), "") or type(exc).__name__
        raise ValueError(f"{what}: {file}: unreadable as torch.save tensors ({why})") from None
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{what}: {file}: holds a {type(value).__name__}, not a tensor")
    return value


def verify_outputs(
    net: nn.Module, verify: ModelConfig.Verify, where: str = "model.verify"
) -> dict[str, Any]:
    """Run `net` (eval mode, no gradients, its modes restored) on the saved inputs and compare
    with the saved outputs.

    Returns:
        `{"inputs": N, "max_abs_error": e, "atol": atol}`.

    Raises:
        ValueError: the outputs differ by more than `atol`, have another shape, or the inputs
            cannot be run; the message names the file.
    """
    inputs = _read_tensor(verify.inputs, f"{where}.inputs")
    wanted = _read_tensor(verify.outputs, f"{where}.outputs")
    param = next(net.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    modes = {m: m.training for m in net.modules()}
    try:
        net.eval()
        with torch.no_grad():
            got = net(inputs.to(device=device, dtype=torch.float32))
    except RuntimeError as exc:
        why = next(iter(str(exc).strip().splitlines()), "") or type(exc).__name__
        raise ValueError(
            f"{where}.inputs: {verify.inputs}: the model cannot run inputs of shape "
            f"{tuple(inputs.shape)} ({why})"
        ) from None
    finally:
        for module, mode in modes.items():
            module.train(mode)
    if not isinstance(got, torch.Tensor) or got.shape != wanted.shape:
        shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
        raise ValueError(
            f"{where}.outputs: {verify.outputs} holds outputs of shape {tuple(wanted.shape)}, "
            f"the model gives {shape}"
        )
    error = (got.float().cpu() - wanted.float()).abs().max().item()
    if not error <= verify.atol:  # NaN fails too
        raise ValueError(
            f"{where}: the loaded weights do not reproduce {verify.outputs}: max abs error "
            f"{error:.3g} > atol {verify.atol:g}"
        )
    return {"inputs": int(inputs.shape[0]), "max_abs_error": error, "atol": verify.atol}


def load_pretrained(
    model: nn.Module, mcfg: ModelConfig, where: str = "model.weights"
) -> WeightsReport | None:
    """Load `mcfg.weights` into `model` (renamed by `weights_map`), check `weights_sha256` and
    run `verify`; None without weights. Models on the meta device are left alone.

    Raises:
        FileNotFoundError, ValueError: see `read_weights`, `load_state`, `verify_outputs`;
            also a file whose sha256 is not the `weights_sha256` the run was planned with.
    """
    if mcfg.weights is None or any(t.is_meta for t in model.state_dict().values()):
        return None
    path = Path(mcfg.weights)
    state = map_keys(read_weights(path, where), mcfg.weights_map, where)
    sha = file_sha256(path)
    if mcfg.weights_sha256 is not None and sha != mcfg.weights_sha256:
        raise ValueError(
            f"{where}: {path} changed since the run was planned (sha256 {sha[:12]}..., the "
            f"config says {mcfg.weights_sha256[:12]}...)"
        )
    report = load_state(model, state, path, where, sha)
    left = {"missing": report.missing, "unexpected": report.unexpected}
    left["reshaped"] = report.reshaped
    if any(left.values()):
        counts = ", ".join(f"{len(v)} {k}" for k, v in left.items() if v)
        _log.warning("%s: %s: %d tensors loaded; %s", where, path, report.loaded, counts)
    if mcfg.verify is not None:
        _, net = unwrap(model) if report.into else ("", model)
        report.verify = verify_outputs(net, mcfg.verify, where.rpartition(".")[0] + ".verify")
    return report
