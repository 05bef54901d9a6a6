"""Generated hostile inputs: hypothesis strategies that draw `Case`s.

Each `Generator` has a group, a strategy of cases and how many examples the default test run
draws (`examples`; `slow_examples` more under the `slow` marker). Strategies draw only inputs
that must be refused (a value that would be accepted is never drawn), except where a case says
that exit 0 is fine too (`codes=(0, 2)`: random files that might happen to be valid).
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import yaml
from fuzz_files import (
    CKPT,
    RUN,
    case,
    cfg,
    data_config,
    idx_file,
    png_bytes,
)
from fuzz_harness import TINY_CONFIG, TINY_SWEEP, Case
from hypothesis import strategies as st

__all__ = ["GENERATED", "Generator"]


@dataclass(frozen=True)
class Generator:
    """Cases drawn by hypothesis (each case names its own group)."""

    name: str
    cases: st.SearchStrategy[Case]
    examples: int
    slow_examples: int = 100


# --- wrong values of config fields ------------------------------------------------------------

_TEXT = st.text(max_size=12)
_NON_NUMERIC = _TEXT.filter(lambda s: not _parses(float, s))
_FRACTIONS = st.floats(allow_nan=True, allow_infinity=True).filter(
    lambda f: not (math.isfinite(f) and f == int(f))
)
_CONTAINERS = st.one_of(
    st.lists(st.integers(), max_size=3), st.dictionaries(_TEXT, st.integers(), max_size=2)
)


def _parses(kind: Callable[[str], Any], text: str) -> bool:
    try:
        kind(text)
    except (ValueError, OverflowError):
        return False
    return True


def _counts(low: int) -> st.SearchStrategy[Any]:
    """Values an integer field `>= low` must refuse."""
    return st.one_of(
        st.integers(max_value=low - 1), _FRACTIONS, st.booleans(), _TEXT, _CONTAINERS, st.none()
    )


def _positive_floats() -> st.SearchStrategy[Any]:
    """Values a finite float field `> 0` must refuse (a numeric string is its own case)."""
    bad = st.floats(max_value=0.0) | st.sampled_from([math.inf, -math.inf, math.nan])
    return st.one_of(bad, st.booleans(), _NON_NUMERIC, _CONTAINERS, st.none())


def _fractions_below_one() -> st.SearchStrategy[Any]:
    """Values a float field in [0, 1) must refuse."""
    bad = st.floats(min_value=1.0) | st.floats(max_value=-1e-9) | st.just(math.nan)
    return st.one_of(bad, st.booleans(), _NON_NUMERIC, _CONTAINERS)


def _booleans() -> st.SearchStrategy[Any]:
    return st.one_of(st.integers(), st.floats(), _TEXT, _CONTAINERS, st.none())


def _choices(known: tuple[str, ...]) -> st.SearchStrategy[Any]:
    return st.one_of(
        _TEXT.filter(lambda s: s not in known), st.integers(), st.booleans(), _CONTAINERS
    )


def _devices() -> st.SearchStrategy[Any]:
    text = st.text(min_size=1, max_size=10).filter(lambda s: s not in ("auto", "cpu"))
    return st.one_of(text, st.integers(), st.booleans(), _CONTAINERS)


FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "train.epochs": _counts(0),
    "train.seed": _counts(0) | st.integers(min_value=2**32),
    "train.optim.lr": _positive_floats(),
    "train.optim.momentum": _fractions_below_one(),
    "train.label_smoothing": _fractions_below_one(),
    "train.grad_clip": _positive_floats().filter(lambda v: v is not None),
    "train.checkpoint_every": _counts(1),
    "train.log_every": _counts(1),
    "train.keep_best": _booleans(),
    "train.device": _devices(),
    "train.optim.name": _choices(("sgd", "adam", "adamw")),
    "train.schedule.name": _choices(("constant", "step", "cosine", "clr", "onecycle")),
    "train.loss": _choices(("ce", "sigmoid_mse", "bce", "ctc")),
    "data.batch_size": _counts(1),
    "data.subset": _counts(1).filter(lambda v: v is not None),
    "data.image_size": _counts(1).filter(lambda v: v is not None),
    "data.augment.flip": _booleans(),
    "data.augment.random_erasing": _fractions_below_one() | st.floats(min_value=1.0001),
    "model.num_classes": _counts(1).filter(lambda v: v is not None),
    "model.activation": _choices(("relu", "relog", "relog1p")),
    "priority": st.one_of(_FRACTIONS, st.booleans(), _TEXT, _CONTAINERS, st.none()),
}
"""Config fields and what each must refuse."""


@st.composite
def _config_cases(draw: st.DrawFn) -> Case:
    key = draw(st.sampled_from(sorted(FIELDS)))
    value = draw(FIELDS[key])
    if draw(st.booleans()):
        files = {"c.yaml": cfg({key: value})}
        return case(
            "config", f"{key}: {value!r} (file)", ["train", "c.yaml", "-o", "out"], key, files=files
        )
    text = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
    argv = ["train", "c.yaml", "-o", "out", "--set", f"{key}={text}"]
    return case("config", f"--set {key}={text}", argv, key, files={"c.yaml": TINY_CONFIG})


@st.composite
def _sweep_cases(draw: st.DrawFn) -> Case:
    # a plan is not tied to a machine: the device is checked where a run trains
    key = draw(st.sampled_from(sorted(k for k in FIELDS if k != "train.device")))
    values = draw(st.lists(FIELDS[key], min_size=1, max_size=3))
    base = TINY_SWEEP.split("grid:")[0]
    body = base + yaml.safe_dump({"grid": {key: values}}, default_flow_style=False)
    return case(
        "sweep file",
        f"grid {key}: {values!r}",
        ["sweep", "plan", "s.yaml"],
        key,
        files={"s.yaml": body},
    )


# --- option strings ---------------------------------------------------------------------------


def _int_at_least(low: int) -> Callable[[str], bool]:
    return lambda s: _parses(int, s) and int(s) >= low


def _finite_above(low: float, inclusive: bool = False) -> Callable[[str], bool]:
    def valid(s: str) -> bool:
        if not _parses(float, s):
            return False
        v = float(s)
        return math.isfinite(v) and (v >= low if inclusive else v > low)

    return valid


def _eps_list(s: str) -> bool:
    parts = [p for p in s.split(",") if p.strip()]
    return bool(parts) and all(_finite_above(0.0)(p) for p in parts)


def _shape(s: str) -> bool:
    parts = s.lower().split("x")
    return all(_parses(int, p) and int(p) >= 1 for p in parts)


OPTIONS: list[tuple[str, list[str], str, Callable[[str], bool]]] = [
    ("attack", ["attack", RUN, "--attacks", "fgsm", "--limit", "4"], "--eps", _eps_list),
    ("attack", ["attack", RUN, "--attacks", "fgsm"], "--limit", _int_at_least(1)),
    ("count", ["count", "simple-cnn"], "--input", _shape),
    ("count", ["count", "simple-cnn", "--conv", "Generic"], "--budget", _finite_above(0.0)),
    ("count", ["count", "simple-cnn"], "--num-classes", _int_at_least(1)),
    ("count", ["count", "simple-cnn"], "--depth", _int_at_least(0)),
    ("inspect", ["inspect", RUN, "-o", "ins", "--max-examples", "8"], "--top", _int_at_least(1)),
    ("inspect", ["inspect", RUN, "-o", "ins", "--top", "2"], "--max-examples", _int_at_least(1)),
    ("lr-find", ["lr-find", "c.yaml", "--iters", "3"], "--start-lr", _finite_above(0.0)),
    (
        "lr-find",
        ["lr-find", "c.yaml", "--iters", "3", "--start-lr", "1e-9"],
        "--end-lr",
        _finite_above(0.0),
    ),
    ("lr-find", ["lr-find", "c.yaml"], "--iters", _int_at_least(3)),
    ("sweep plan", ["sweep", "plan", "s.yaml"], "--price", _finite_above(0.0, inclusive=True)),
    ("sweep run", ["sweep", "run", "s.yaml", "--json"], "--slots", _int_at_least(1)),
    ("sweep run", ["sweep", "run", "s.yaml", "--json"], "--retries", _int_at_least(0)),
    ("sweep search", ["sweep", "search", "q.yaml", "--json"], "--trials", _int_at_least(1)),
    ("demo", ["demo", "-o", "d"], "--epochs", _int_at_least(1)),
    ("demo", ["demo", "-o", "d"], "--slots", _int_at_least(1)),
    ("demo", ["demo", "-o", "d"], "--attack-examples", _int_at_least(1)),
    (
        "cloud prices",
        ["cloud", "prices", "--instance-types", "g5.xlarge", "--regions", "us-east-1"],
        "--hours",
        _finite_above(0.0),
    ),
]
"""(group, command line, option, is the value valid)."""

_OPTION_TEXT = st.one_of(
    st.text(max_size=10),
    st.integers(max_value=0).map(str),
    st.floats().map(repr),
    st.sampled_from(["nan", "inf", "-inf", "1e400", "-0", "0x10", "", " ", "1.5", "1,2", "5e-324"]),
)


@st.composite
def _option_cases(draw: st.DrawFn) -> Case:
    from fuzz_harness import TINY_SEARCH

    group, argv, option, valid = draw(st.sampled_from(OPTIONS))
    value = draw(_OPTION_TEXT.filter(lambda s: not valid(s)))
    files = {"c.yaml": TINY_CONFIG, "s.yaml": TINY_SWEEP, "q.yaml": TINY_SEARCH}
    needs_run = RUN in argv
    return case(
        group,
        f"{option}={value!r}",
        [*argv, f"{option}={value}"],
        option,
        files=files,
        runs=needs_run,
    )


# --- filters of the store ---------------------------------------------------------------------

_KEYS = st.sampled_from(["test_acc", "params", "status", "name", "id", "train.seed", "a.b", "x"])
_OPS = st.sampled_from(["=", "!=", "<", "<=", ">", ">=", "==", "<>", "=>", ""])
_VALUES = st.one_of(
    st.integers().map(str),
    st.integers(min_value=2**62).map(str),
    st.floats().map(repr),
    st.text(max_size=8),
    st.sampled_from(["null", "true", "'x'", '"', "1e999", "NaN", "-inf"]),
)


@st.composite
def _where_cases(draw: st.DrawFn) -> Case:
    if draw(st.booleans()):
        expr = draw(st.text(max_size=20))
    else:
        expr = draw(_KEYS) + draw(_OPS) + draw(_VALUES)
    verb = draw(st.sampled_from(["runs", "report"]))
    argv = ["runs", "--store", "runs/nettle.db"] if verb == "runs" else ["report", "-o", "rep"]
    left = ("rep", "runs/nettle.db-wal", "runs/nettle.db-shm")
    return case(
        verb,
        f"--where {expr!r}",
        [*argv, f"--where={expr}"],
        "filter|--where",
        codes=(0, 2),
        runs=True,
        new_files=verb == "report",
        absent=left,
    )


# --- random files for the loaders -------------------------------------------------------------

_BYTES = st.binary(min_size=1, max_size=600)


@st.composite
def _file_cases(draw: st.DrawFn) -> Case:
    kind = draw(st.sampled_from(sorted(_FILE_KINDS)))
    return _FILE_KINDS[kind](draw)


def _checkpoint_bytes(draw: st.DrawFn) -> Case:
    data = draw(_BYTES)
    return case(
        "checkpoint", f"random bytes {data[:8]!r}", ["attack", "m.pt"], "m.pt", files={"m.pt": data}
    )


def _checkpoint_cut(draw: st.DrawFn) -> Case:
    fraction = draw(st.floats(min_value=0.0, max_value=0.9999))

    def cut(work: Any, fx: Any) -> bytes:
        raw = (fx.root / CKPT).read_bytes()
        return raw[: int(len(raw) * fraction)]

    return case(
        "checkpoint", f"cut at {fraction:.4f}", ["attack", "m.pt"], "m.pt", files={"m.pt": cut}
    )


def _checkpoint_flips(draw: st.DrawFn) -> Case:
    spots = draw(st.lists(st.floats(min_value=0.0, max_value=0.9999), min_size=1, max_size=4))

    def flipped(work: Any, fx: Any) -> bytes:
        raw = bytearray((fx.root / CKPT).read_bytes())
        for spot in spots:
            raw[int(len(raw) * spot)] ^= 0xFF
        return bytes(raw)

    argv = ["attack", "m.pt", "--attacks", "fgsm", "--limit", "4"]
    return case(
        "checkpoint",
        f"bytes flipped at {spots}",
        argv,
        "m.pt",
        files={"m.pt": flipped},
        codes=(0, 2),
        new_files=True,
    )


def _store_bytes(draw: st.DrawFn) -> Case:
    data = draw(_BYTES)
    return case(
        "store",
        f"random bytes {data[:8]!r}",
        ["runs", "--store", "s.db"],
        "s.db",
        files={"s.db": data},
    )


def _store_cut(draw: st.DrawFn) -> Case:
    fraction = draw(st.floats(min_value=0.0, max_value=0.9999))

    def cut(work: Any, fx: Any) -> bytes:
        raw = fx.store.read_bytes()
        return raw[: max(1, int(len(raw) * fraction))]

    # a malformed store leaves SQLite's -wal and -shm files (a listed known defect)
    return case(
        "store",
        f"cut at {fraction:.4f}",
        ["runs", "--store", "s.db"],
        "s.db",
        files={"s.db": cut},
        codes=(0, 2),
        new_files=True,
    )


def _config_bytes(draw: st.DrawFn) -> Case:
    data = draw(st.binary(max_size=300))
    argv = ["train", "c.yaml", "-o", "out", "--set", "train.epochs=-1"]
    return case(
        "config",
        f"random bytes {data[:8]!r}",
        argv,
        "c.yaml|--set|train.epochs",
        files={"c.yaml": data},
    )


def _sweep_bytes(draw: st.DrawFn) -> Case:
    data = draw(st.binary(max_size=300))
    return case(
        "sweep file",
        f"random bytes {data[:8]!r}",
        ["sweep", "plan", "s.yaml"],
        "s.yaml",
        files={"s.yaml": data},
        codes=(0, 2),
    )


def _idx_images(draw: st.DrawFn) -> Case:
    type_byte = draw(st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x01, 0xFF]))
    dims = draw(st.lists(st.integers(min_value=0, max_value=40), max_size=4))
    size = draw(st.integers(min_value=0, max_value=2000))
    header = bytes([0, 0, type_byte, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
    data = header + draw(st.binary(min_size=size, max_size=size))
    files = {"c.yaml": data_config("mnist", **{"train.epochs": 1})}
    labels = idx_file((np.arange(20) % 10).astype(np.uint8))
    for prefix in ("train", "t10k"):
        files[f"d/{prefix}-images-idx3-ubyte"] = data
        files[f"d/{prefix}-labels-idx1-ubyte"] = labels
    return case(
        "mnist",
        f"images type {type_byte:#x} dims {dims} + {size} bytes",
        ["train", "c.yaml", "-o", "out"],
        "train-images|t10k-images|num_classes",
        files=files,
        codes=(0, 2),
    )


def _cifar_records(draw: st.DrawFn) -> Case:
    data = draw(
        st.one_of(
            _BYTES,
            st.lists(st.integers(0, 255), min_size=1, max_size=3).map(
                lambda labels: b"".join(bytes([y]) + bytes(3072) for y in labels)
            ),
        )
    )
    files = {"c.yaml": data_config("cifar10")}
    for n in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        files[f"d/cifar-10-batches-bin/{n}.bin"] = data
    return case(
        "cifar10",
        f"binary batches of {len(data)} bytes",
        ["train", "c.yaml", "-o", "out"],
        "data_batch_1.bin|test_batch.bin",
        files=files,
        codes=(0, 2),
    )


_PLAIN = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.binary(max_size=8),
        st.text(max_size=8),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.binary(max_size=6) | st.text(max_size=6), inner, max_size=3),
    ),
    max_leaves=8,
)


def _cifar_pickles(draw: st.DrawFn) -> Case:
    if draw(st.booleans()):
        data = draw(_BYTES)
    else:
        data = pickle.dumps(draw(_PLAIN), protocol=draw(st.integers(0, 5)))
    files = {"c.yaml": data_config("cifar10")}
    for n in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        files[f"d/cifar-10-batches-py/{n}"] = data
    return case(
        "cifar10",
        f"python batches {data[:10]!r}",
        ["train", "c.yaml", "-o", "out"],
        "data_batch_1|test_batch",
        files=files,
    )


def _images(draw: st.DrawFn) -> Case:
    good = png_bytes()
    if draw(st.booleans()):
        data = draw(_BYTES)
    else:  # a real PNG with a few bytes changed or cut
        raw = bytearray(good)
        for spot in draw(st.lists(st.integers(0, len(raw) - 1), min_size=1, max_size=3)):
            raw[spot] ^= draw(st.integers(1, 255))
        data = bytes(raw[: draw(st.integers(1, len(raw)))])
    files = {"c.yaml": data_config("imagefolder", **{"data.image_size": 8})}
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            files[f"d/{split}/{cls}/0.png"] = good
            files[f"d/{split}/{cls}/1.png"] = good
    files["d/train/cat/0.png"] = data
    # lr-find reads every training image and writes no run dir
    return case(
        "imagefolder",
        f"an image of {len(data)} bytes",
        ["lr-find", "c.yaml", "--iters", "3"],
        "0.png",
        files=files,
        codes=(0, 2),
    )


def _references(draw: st.DrawFn) -> Case:
    suffix = draw(st.sampled_from([".csv", ".yaml"]))
    data = draw(st.one_of(_BYTES, st.text(max_size=200).map(str.encode)))
    return case(
        "report",
        f"references{suffix} {data[:8]!r}",
        ["report", "-o", "rep", "--references", f"p{suffix}"],
        f"p{suffix}",
        runs=True,
        files={f"p{suffix}": data},
        codes=(0, 2),
        new_files=True,
        absent=("rep",),
    )


_FILE_KINDS: dict[str, Callable[[st.DrawFn], Case]] = {
    "checkpoint bytes": _checkpoint_bytes,
    "checkpoint cut": _checkpoint_cut,
    "store bytes": _store_bytes,
    "config bytes": _config_bytes,
    "sweep bytes": _sweep_bytes,
    "idx images": _idx_images,
    "cifar records": _cifar_records,
    "cifar pickles": _cifar_pickles,
    "images": _images,
}


GENERATED: list[Generator] = [
    Generator("config values", _config_cases(), 40),
    Generator("grid values", _sweep_cases(), 10),
    Generator("option values", _option_cases(), 50),
    Generator("filters", _where_cases(), 15),
    Generator("random files", _file_cases(), 40),
    Generator("flipped checkpoints", st.composite(_checkpoint_flips)(), 10),
    Generator("truncated stores", st.composite(_store_cut)(), 8),
    Generator("reference files", st.composite(_references)(), 8),
]
"""Every generator; the default test run draws `examples` of each."""
