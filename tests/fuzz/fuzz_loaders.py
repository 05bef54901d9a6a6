"""Hand-listed hostile files for the loaders of configs, sweep files, checkpoints and the run
store (the data sets' are in `fuzz_datasets`)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from fuzz_files import (
    ALIAS_BOMB,
    CKPT,
    CUDA,
    RUN,
    TRAIN,
    case,
    cfg,
    other_model_checkpoint,
    other_zip,
    run_with,
    store_of_another_app,
    torch_pickle_with_code,
    truncated,
    zip_name_not_utf8,
)
from fuzz_harness import TINY_CONFIG, TINY_SWEEP, Case, Fixtures

__all__ = ["loader_cases"]


def _config() -> list[Case]:
    def bad(name: str, changes: dict[str, Any], *names: str, **kw: Any) -> Case:
        files = {"c.yaml": cfg(changes)} | kw.pop("files", {})
        return case("config", name, TRAIN, *names, files=files, **kw)

    def text(name: str, body: str | bytes, *names: str) -> Case:
        return case("config", name, TRAIN, *names, files={"c.yaml": body})

    teacher = {"distill": {"teacher": "t.pt"}}
    attacks = {"attacks": {"fgsm": {}}, "eps": [float("nan")]}
    return [
        bad("unknown top-level key", {"bogus": 1}, "bogus"),
        bad("unknown key in a section", {"train.epoch": 1}, "train.epoch"),
        bad("epochs: true", {"train.epochs": True}, "train.epochs"),
        bad("epochs: 1.5", {"train.epochs": 1.5}, "train.epochs"),
        bad("epochs: '3'", {"train.epochs": "3"}, "train.epochs"),
        bad("epochs: -1", {"train.epochs": -1}, "train.epochs"),
        bad("epochs: .inf", {"train.epochs": float("inf")}, "train.epochs"),
        bad("lr: .inf", {"train.optim.lr": float("inf")}, "train.optim.lr"),
        bad("lr: .nan", {"train.optim.lr": float("nan")}, "train.optim.lr"),
        bad("lr: '1e-3' (a string)", {"train.optim.lr": "1e-3"}, "train.optim.lr"),
        bad("lr: 0", {"train.optim.lr": 0}, "train.optim.lr"),
        bad("lr: -0.1", {"train.optim.lr": -0.1}, "train.optim.lr"),
        bad("momentum: 1", {"train.optim.momentum": 1.0}, "train.optim.momentum"),
        bad("betas of one", {"train.optim.betas": [0.9]}, "train.optim.betas"),
        bad("optimiser unknown", {"train.optim.name": "bogus"}, "train.optim.name"),
        bad("schedule unknown", {"train.schedule.name": "bogus"}, "train.schedule.name"),
        bad("seed: -1", {"train.seed": -1}, "train.seed"),
        bad("seed: 2**64", {"train.seed": 2**64}, "train.seed"),
        bad("device unknown", {"train.device": "bogus"}, "train.device"),
        bad("device cuda:7", {"train.device": "cuda:7"}, "train.device"),
        bad(
            "device cuda on a CPU machine",
            {"train.device": "cuda"},
            "train.device",
            codes=(0,) if CUDA else (2,),
        ),
        bad("device a list", {"train.device": ["cpu"]}, "train.device"),
        bad("num_classes below the data's", {"model.num_classes": 3}, "num_classes"),
        bad("num_classes: 0", {"model.num_classes": 0}, "model.num_classes"),
        bad("width: -4", {"model.kwargs": {"width": -4}}, "width"),
        bad("width: 0", {"model.kwargs": {"width": 0}}, "width"),
        bad("width: 10**15", {"model.kwargs": {"width": 10**15}}, "width"),
        bad("width: 2.5", {"model.kwargs": {"width": 2.5}}, "width"),
        bad("model option unknown", {"model.kwargs": {"depth": 3}}, "depth"),
        bad("model unknown", {"model.name": "bogus"}, "bogus"),
        bad("substitute unknown", {"model.conv": "bogus"}, "bogus"),
        bad("substitute setting inf", {"model.conv": "LR_inf"}, "LR"),
        bad("substitute setting nan", {"model.conv": "Generic_nan"}, "Generic"),
        bad("budget without a substitute", {"model.budget": {"params": 100}}, "budget"),
        bad("budget too small", {"model.conv": "Generic", "model.budget": {"params": 1}}, "budget"),
        bad("data set unknown", {"data.name": "bogus"}, "bogus"),
        bad("batch_size: 0", {"data.batch_size": 0}, "data.batch_size"),
        bad("subset: 0", {"data.subset": 0}, "data.subset"),
        bad("image_size: -1", {"data.image_size": -1}, "data.image_size"),
        bad("erasing probability 2", {"data.augment.random_erasing": 2.0}, "random_erasing"),
        bad("name with a slash", {"name": "a/b"}, "name"),
        bad("name ..", {"name": ".."}, "name"),
        bad("loss unknown", {"train.loss": "hinge"}, "train.loss"),
        bad("ctc loss for a classifier", {"train.loss": "ctc"}, "ctc"),
        bad("adversarial eps 0", {"adversarial": {"eps": 0}}, "adversarial.eps"),
        bad("adversarial mode unknown", {"adversarial": {"mode": "bogus"}}, "adversarial.mode"),
        bad("teacher missing", {"distill": {"teacher": "nowhere"}}, "nowhere"),
        bad("teacher a text file", teacher, "t.pt", files={"t.pt": "not a checkpoint"}),
        bad("attacks without eps", {"evaluate": {"attacks": {"pgd": {}}}}, "evaluate"),
        bad("attack unknown", {"evaluate": {"attacks": {"bogus": {}}, "eps": [0.1]}}, "bogus"),
        bad("attack eps nan", {"evaluate": attacks}, "evaluate.eps"),
        bad("count input of zeros", {"evaluate": {"count": {"input": [0, 8, 8]}}}, "input"),
        bad("convention unknown", {"evaluate": {"count": {"convention": "bogus"}}}, "bogus"),
        bad("priority .inf", {"priority": float("inf")}, "priority"),
        text("top level a list", "- 1\n- 2\n", "top level"),
        text("top level a string", "hello\n", "top level"),
        text("duplicate key", TINY_CONFIG + "train: {epochs: 2}\n", "train"),
        text("alias bomb", ALIAS_BOMB, "c.yaml"),
        text("python tag", "model: !!python/object/apply:os.system ['echo owned']\n", "c.yaml"),
        text("binary tag", "name: !!binary aGVsbG8=\n", "name"),
        text("date value", "train: {device: 2020-01-01}\n", "train.device"),
        text("key not a string", "1: 2\n", "1"),
        text("non-UTF-8 bytes", b"name: caf\xe9\n", "c.yaml"),
        text("NUL in the text", "name: a\x00b\n", "c.yaml"),
        text("deep nesting", "x: " + "[" * 200 + "]" * 200 + "\n", "c.yaml"),
        text("tab indentation", "train:\n\tepochs: 1\n", "c.yaml"),
        text("unclosed bracket", "train: {epochs: 1\n", "c.yaml"),
        text("2 MB of comments", "#" * 2_000_000 + "\n", "c.yaml"),
        text("an integer of 5000 digits", "train: {epochs: 1" + "0" * 5000 + "}\n", "c.yaml"),
    ]


def _sweep_file() -> list[Case]:
    def sweep(name: str, body: str | bytes, *names: str, **kw: Any) -> Case:
        files = {"s.yaml": body} | kw.pop("files", {})
        return case("sweep file", name, ["sweep", "plan", "s.yaml"], *names, files=files, **kw)

    base = TINY_SWEEP.split("grid:")[0]
    return [
        sweep("a folder", "", "s.yaml", files={"s.yaml": None, "s.yaml/x": "x"}),
        sweep("random bytes", bytes(range(256)), "s.yaml"),
        sweep("non-UTF-8", b"name: \xff\n", "s.yaml"),
        sweep("alias bomb", ALIAS_BOMB.replace("model: {name: simple-cnn}", "name: s"), "s.yaml"),
        sweep("top level a list", "- a\n", "s.yaml"),
        sweep("name with a slash", TINY_SWEEP.replace("name: tinysweep", "name: ../up"), "name"),
        sweep("unknown top-level key", TINY_SWEEP + "grids: {}\n", "grids"),
        sweep("base a list", "name: s\nbase: [1]\n", "base"),
        sweep("grid a list", base + "grid: [1, 2]\n", "grid"),
        sweep("grid value not a list", base + "grid: {train.seed: 3}\n", "grid"),
        sweep(
            "grid value of a wrong type", base + "grid: {train.epochs: [true]}\n", "train.epochs"
        ),
        sweep("grid key unknown", base + "grid: {train.bogus: [1]}\n", "train.bogus"),
        sweep(
            "grid of an empty list",
            base + "grid: {train.seed: []}\n",
            "train.seed|grid",
            codes=(0, 2),
        ),
        sweep(
            "zip of different lengths",
            base + "zip: {train.seed: [1, 2], train.epochs: [1]}\n",
            "zip",
        ),
        sweep(
            "exclude an unknown key", TINY_SWEEP + "exclude: [{train.bogus: 1}]\n", "train.bogus"
        ),
        sweep("include not a list", TINY_SWEEP + "include: 3\n", "include"),
        sweep("list of scalars", base + "list: [1, 2]\n", "list"),
        sweep("base field wrong", TINY_SWEEP.replace("epochs: 1", "epochs: -1"), "train.epochs"),
        sweep("python tag", "name: !!python/object/apply:os.system ['ls']\n", "s.yaml"),
        sweep("duplicate key", TINY_SWEEP + "name: again\n", "name"),
        sweep(
            "a million runs",
            base
            + "grid: {train.seed: "
            + str(list(range(1000)))
            + ", data.batch_size: "
            + str(list(range(1, 1001)))
            + "}\n",
            "s.yaml|runs",
            subprocess=True,
            timeout=30,
            slow=True,
        ),
    ]


def _checkpoint() -> list[Case]:
    def ckpt(name: str, data: Any, *names: str, **kw: Any) -> Case:
        argv = ["attack", "m.pt", "--limit", "4", "--attacks", "fgsm"]
        return case("checkpoint", name, argv, *names, files={"m.pt": data}, **kw)

    def in_run(name: str, data: Any, *names: str) -> Case:
        argv = ["inspect", RUN, "-o", "ins", "--max-examples", "8"]
        return case(
            "checkpoint", f"{name} in a run dir", argv, *names, runs=True, files=run_with(data)
        )

    teacher = {"c.yaml": cfg({"distill": {"teacher": "t.pt"}}), "t.pt": bytes(range(100))}
    return [
        ckpt("empty", b"", "m.pt"),
        ckpt("one byte", b"\x80", "m.pt"),
        ckpt("text", "model: resnet18\n", "m.pt"),
        ckpt("random bytes", bytes(range(256)) * 3, "m.pt"),
        ckpt("a zip of other files", other_zip(), "m.pt"),
        ckpt("a pickle calling os.system", torch_pickle_with_code, "m.pt"),
        ckpt("half a checkpoint", truncated(CKPT, 0.5), "m.pt"),
        ckpt("a zip directory name not UTF-8", zip_name_not_utf8, "m.pt"),
        ckpt("all but the last bytes", truncated(CKPT, 0.995), "m.pt"),
        case("checkpoint", "a folder", ["attack", "m.pt"], "m.pt", files={"m.pt/x": "x"}),
        in_run("random bytes", bytes(range(256)), "best.pt"),
        in_run("truncated", truncated(CKPT, 0.3), "best.pt"),
        in_run("text", "hello\n", "best.pt"),
        in_run("another model's", other_model_checkpoint, "best.pt"),
        case("checkpoint", "a teacher of random bytes", TRAIN, "t.pt", files=teacher),
    ]


def _newer_store(work: Path, fx: Fixtures) -> bytes:
    path = work / "n.tmp"
    path.write_bytes(fx.store.read_bytes())
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value='999' WHERE key='schema_version'")
    db.close()
    raw = path.read_bytes()
    path.unlink()
    return raw


def _store() -> list[Case]:
    def runs(name: str, data: Any, *names: str, **kw: Any) -> Case:
        argv = ["runs", "--store", "s.db"]
        return case("store", name, argv, *names, files={"s.db": data}, **kw)

    def head(keep: int) -> Any:
        return lambda work, fx: fx.store.read_bytes()[:keep]

    def flipped(work: Path, fx: Fixtures) -> bytes:
        raw = bytearray(fx.store.read_bytes())
        for i in range(100, len(raw), 97):
            raw[i] ^= 0xFF
        return bytes(raw)

    corrupt = {"runs/nettle.db": bytes(range(200))}
    return [
        runs("the first 100 bytes", head(100), "s.db"),
        runs(
            "half a store",
            lambda w, fx: fx.store.read_bytes()[: len(fx.store.read_bytes()) // 2],
            "s.db",
        ),
        runs("bytes flipped", flipped, "s.db"),
        runs("a newer schema", _newer_store, "s.db"),
        runs("a header and zeros", b"SQLite format 3\x00" + bytes(2000), "s.db"),
        case(
            "store",
            "another app's database (sweep plan)",
            ["sweep", "plan", "s.yaml", "--store", "s.db"],
            "s.db",
            files={"s.yaml": TINY_SWEEP, "s.db": store_of_another_app},
        ),
        case(
            "store",
            "random bytes (report)",
            ["report", "-o", "rep", "--store", "s.db"],
            "s.db",
            files={"s.db": bytes(range(50))},
        ),
        case(
            "store",
            "random bytes beside a run dir (attack)",
            ["attack", RUN, "--limit", "4", "--attacks", "fgsm"],
            "nettle.db",
            runs=True,
            files=corrupt,
        ),
        case(
            "store",
            "random bytes at the default place (train)",
            ["train", "c.yaml", "-o", "runs/tiny/new"],
            "nettle.db",
            runs=True,
            files=corrupt | {"c.yaml": TINY_CONFIG},
        ),
    ]


def loader_cases() -> list[Case]:
    """Every listed case of the configs, sweep files, checkpoints and the store."""
    return [
        *_config(),
        *_sweep_file(),
        *_checkpoint(),
        *_store(),
    ]
