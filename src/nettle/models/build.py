"""A model from a config, and a trained model from a run dir or a checkpoint.

`build_model(cfg)` builds the network an `ExperimentConfig` describes: the zoo model with its
substitute, classes, channels and normalisation defaulting to the data set's, activations
replaced and blocks checkpointed as asked. `load_run_model` and `load_teacher` rebuild a
trained one from the config stored beside (or inside) its checkpoint, loaded with
`weights_only=True`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from nettle.config import ExperimentConfig, load_config, load_config_dict
from nettle.models.factory import create_model
from nettle.train.checkpoint import load_checkpoint
from nettle.train.data import get_dataset_info

__all__ = ["build_model", "load_run_model", "load_teacher"]


def build_model(cfg: ExperimentConfig) -> nn.Module:
    """The model of `cfg`; classes, channels and normalisation default to the data set's.

    `model.kwargs` may set `mean` and `std` itself (null for no normalisation); otherwise the
    data set's are used when the model takes the data set's number of channels.
    """

    info = get_dataset_info(cfg.data.name, cfg.data.root, cfg.data.image_size)
    kwargs = dict(cfg.model.kwargs)
    if cfg.model.maxout:
        kwargs["maxout"] = cfg.model.maxout
    in_channels = cfg.model.in_channels or info.in_channels
    same = in_channels == info.in_channels
    model = create_model(
        cfg.model.name,
        num_classes=cfg.model.num_classes or info.num_classes,
        in_channels=in_channels,
        conv=cfg.model.conv,
        mean=kwargs.pop("mean", info.mean if same else None),
        std=kwargs.pop("std", info.std if same else None),
        **kwargs,
    )
    if cfg.model.activation != "relu":
        from nettle.nn.logic import ReLog, ReLog1p, replace_relu

        replace_relu(model, {"relog": ReLog, "relog1p": ReLog1p}[cfg.model.activation])
    if cfg.model.checkpoint_blocks:
        from nettle.nn.checkpointing import checkpoint_blocks

        checkpoint_blocks(model)
    return model


def load_teacher(path: str | Path) -> nn.Module:
    """A trained model from a run dir or from a checkpoint file (which holds its config)."""

    path = Path(path)
    if path.is_dir():
        return load_run_model(path)
    if not path.is_file():
        raise FileNotFoundError(f"distill.teacher: {path} is neither a run dir nor a checkpoint")
    ckpt = load_checkpoint(path)
    if not ckpt.get("config"):
        raise ValueError(f"{path}: the checkpoint holds no config to rebuild the teacher from")
    model = build_model(load_config_dict(ckpt["config"], source=str(path)))
    _load_weights(model, ckpt["model"], path)
    return model.eval()


def _load_weights(model: nn.Module, state: Any, path: Path) -> None:
    """Load a checkpoint's weights into `model`; a mismatch is one line naming the file."""
    if not isinstance(state, dict):
        raise ValueError(f"{path}: holds no model weights (a mapping of tensors)")
    want = model.state_dict()
    missing = [k for k in want if k not in state]
    unexpected = [k for k in state if k not in want]
    shaped = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in want.items()
        if k in state and getattr(state[k], "shape", None) != v.shape
    ]
    problems = [
        f"{len(items)} {what} (e.g. {items[0]})"
        for items, what in (
            (missing, "missing"),
            (unexpected, "unexpected"),
            (shaped, "of another shape"),
        )
        if items
    ]
    if problems:
        raise ValueError(
            f"{path}: its weights do not fit the model its config describes: "
            f"{'; '.join(problems)}; was it written by another model?"
        )
    model.load_state_dict(state)


def load_run_model(
    run_dir: str | Path,
    cfg: ExperimentConfig | None = None,
    which: str = "best",
    checkpoint: str | Path | None = None,
) -> nn.Module:
    """The trained model of a run dir (`checkpoint`, else `best.pt`, else `last.pt`), in
    eval mode on the CPU."""

    run_dir = Path(run_dir)
    if cfg is None:
        path = run_dir / "config.yaml"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no config; is {run_dir} a run dir?")
        cfg = load_config(path)
    ckpts = run_dir / "checkpoints"
    order = ["best.pt", "last.pt"] if which == "best" else ["last.pt"]
    found = next((ckpts / n for n in order if (ckpts / n).is_file()), None)
    found = Path(checkpoint) if checkpoint is not None else found
    if found is None:
        raise FileNotFoundError(f"{ckpts}: no checkpoint ({' or '.join(order)})")
    model = build_model(cfg)
    _load_weights(model, load_checkpoint(found).get("model"), found)
    return model.eval()
