"""Turn any network into a Bayesian one for Bayesian compression (Louizos et al. 2017).

`convert_to_bayesian(model)` replaces, in place, every `nn.Linear` and `nn.Conv2d` (exactly those
types: subclasses such as `MultiheadAttention`'s output projection keep their meaning) by its
group normal-Jeffreys version (`nettle.nn.bayesian.LinearGroupNJ.from_dense`,
`Conv2dGroupNJ.from_dense`): the dense weights and biases become the means, so converting a
trained model keeps its function. Structured substitutes (`nettle.nn.substitutes`) and the layers
inside them are left alone: they have their own compression. Convolutions with a padding mode
other than zeros are left alone too, and reported.

Variance clipping follows the authors' example: `clip_var` (0.04) bounds the weight variances of
the first converted layer (`clip="first"`), or of every converted layer (`clip="all"`).

`prepare_bayesian(model, cfg.bayes, name)` is what `nettle.models.build.build_model` calls for a
config with a `bayes:` section: it converts when `bayes.convert` is on and refuses (one line) a
model with nothing to convert, or a `bayes:` run whose model has no Bayesian layer at all.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from torch import nn

from nettle.config import BayesConfig
from nettle.nn.bayesian import BayesianLayer, Conv2dGroupNJ, LinearGroupNJ
from nettle.nn.substitutes import SUBSTITUTES
from nettle.nn.substitutes.hashed import HashedConv2d
from nettle.nn.substitutes.separable import DepthwisePointwise
from nettle.nn.substitutes.shuffle import LinearShuffleNet

__all__ = ["BayesConversion", "convert_to_bayesian", "is_substitute", "prepare_bayesian"]

_BUILT_IN_SUBSTITUTES = (DepthwisePointwise, HashedConv2d, LinearShuffleNet)


@dataclass
class BayesConversion:
    """What `convert_to_bayesian` did: the converted layers (module order), the layers it left
    dense with the reason, and the layers whose variances are clipped."""

    converted: list[str] = field(default_factory=list)
    left: dict[str, str] = field(default_factory=dict)
    clipped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def is_substitute(module: nn.Module) -> bool:
    """Whether `module` is a structured substitute (built in, or a registered class)."""
    if isinstance(module, _BUILT_IN_SUBSTITUTES):
        return True
    registered = tuple(f for f in (SUBSTITUTES.get(n) for n in SUBSTITUTES) if isinstance(f, type))
    return bool(registered) and isinstance(module, registered) and type(module) is not nn.Conv2d


def _bayesian(module: nn.Module, clip_var: float | None) -> BayesianLayer:
    if type(module) is nn.Linear:
        return LinearGroupNJ.from_dense(module, clip_var)
    return Conv2dGroupNJ.from_dense(module, clip_var)  # type: ignore[arg-type]


def convert_to_bayesian(
    model: nn.Module, clip_var: float | None = 0.04, clip: str = "first"
) -> BayesConversion:
    """Replace every `nn.Linear`/`nn.Conv2d` of `model` (outside substitutes) in place.

    Args:
        model: any network; its layers' weights become the means.
        clip_var: the largest weight variance kept by `clip_variances` (None: no clipping).
        clip: "first" (the first converted layer, as the authors' example) or "all".

    Returns:
        The names converted, left alone (with why) and clipped.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4, 2))
        >>> convert_to_bayesian(net).converted
        ['0', '3']
    """
    if clip not in ("first", "all"):
        raise ValueError(f"clip must be 'first' or 'all', got {clip!r}")
    report = BayesConversion()

    def visit(parent: nn.Module, prefix: str) -> None:
        for name, child in parent.named_children():
            full = f"{prefix}{name}"
            if is_substitute(child):
                report.left[full] = f"substitute {type(child).__name__}"
            elif type(child) in (nn.Linear, nn.Conv2d):
                if getattr(child, "padding_mode", "zeros") != "zeros":
                    report.left[full] = f"padding_mode {child.padding_mode}"
                    continue
                first = not report.converted
                limit = clip_var if (clip == "all" or first) else None
                setattr(parent, name, _bayesian(child, limit))
                report.converted.append(full)
                if limit is not None:
                    report.clipped.append(full)
            else:
                visit(child, f"{full}.")

    visit(model, "")
    return report


def prepare_bayesian(model: nn.Module, cfg: BayesConfig, name: str) -> BayesConversion | None:
    """Convert `model` as `cfg` says and check that it has Bayesian layers to train.

    Returns:
        The conversion (None without `cfg.convert`).

    Raises:
        ValueError: `bayes.convert` on a model with nothing to convert, or no Bayesian layer
            in the model at all (one line naming the option that would help).
    """
    already = any(isinstance(m, BayesianLayer) for m in model.modules())
    if not cfg.convert:
        if not already:
            raise ValueError(
                f"bayes: model {name!r} has no Bayesian layers; set bayes.convert: true to "
                "convert its Linear and Conv2d layers (or use bayes-lenet)"
            )
        return None
    report = convert_to_bayesian(model, cfg.clip_var, cfg.clip)
    if not report.converted:
        if already:
            raise ValueError(
                f"bayes.convert: model {name!r} is Bayesian already; set bayes.convert: false"
            )
        left = f" (left alone: {', '.join(report.left)})" if report.left else ""
        raise ValueError(
            f"bayes.convert: model {name!r} has no nn.Linear or nn.Conv2d outside substitutes "
            f"to convert{left}"
        )
    return report
