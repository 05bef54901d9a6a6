"""Hand-listed hostile options of cli, train, attack, count, inspect and lr-find (the verbs of
many runs are in `fuzz_many_runs`, the loaders' cases in `fuzz_loaders`)."""

from __future__ import annotations

from typing import Any

from fuzz_files import (
    CKPT,
    CUDA,
    LAST,
    RUN,
    TRAIN,
    C,
    case,
    cfg,
    other_model_checkpoint,
    remove,
    run_with,
    state_only,
    store_of_another_app,
)
from fuzz_harness import Case

__all__ = ["verb_cases"]


def _cli() -> list[Case]:
    return [
        case("cli", "unknown verb", ["bogus"], "bogus"),
        case("cli", "no verb", [], "VERB"),
        case("cli", "unknown option", ["count", "simple-cnn", "--bogus"], "--bogus"),
        case("cli", "missing argument", ["attack"], "target"),
        case("cli", "sweep without action", ["sweep"], "ACTION"),
        case("cli", "cloud without action", ["cloud"], "ACTION"),
        case("cli", "option without value", ["attack", "r", "--eps"], "--eps"),
        case("cli", "int option given text", ["count", "simple-cnn", "--depth", "x"], "--depth"),
        case("cli", "choice not offered", ["runs", "--format", "xml"], "--format"),
        case(
            "cli",
            "in a real process",
            ["count", "simple-cnn", "--depth", "x"],
            "--depth",
            subprocess=True,
            slow=True,
        ),
    ]


def _train() -> list[Case]:
    ro = {"ro/keep.txt": "mine"}
    other = {"other.yaml": cfg({"train.seed": 7}), "r/config.yaml": cfg()}
    store = [*TRAIN, "--store", "s.db"]
    return [
        case("train", "missing config", TRAIN, "c.yaml"),
        case("train", "config is a folder", TRAIN, "c.yaml", files={"c.yaml/x": "x"}),
        case(
            "train",
            "-o an existing file",
            ["train", "c.yaml", "-o", "f"],
            "f",
            files=C | {"f": "mine"},
        ),
        case(
            "train",
            "-o below a file",
            ["train", "c.yaml", "-o", "f/run"],
            "f",
            files=C | {"f": "mine"},
        ),
        case(
            "train",
            "-o a read-only folder",
            ["train", "c.yaml", "-o", "ro/run"],
            "ro",
            files=C | ro,
            readonly="ro",
        ),
        case(
            "train",
            "-o a run dir of another config",
            ["train", "other.yaml", "-o", "r"],
            "r",
            files=other,
        ),
        case(
            "train",
            "-o a folder of other files",
            ["train", "c.yaml", "-o", "r"],
            "r",
            files=C | {"r/notes.txt": "mine"},
        ),
        case("train", "--store random bytes", store, "s.db", files=C | {"s.db": bytes(range(256))}),
        case("train", "--store a folder", [*TRAIN, "--store", "s"], "s", files=C | {"s/x": "x"}),
        case(
            "train",
            "--store another app's database",
            store,
            "s.db",
            files=C | {"s.db": store_of_another_app},
        ),
        case("train", "--set without =", [*TRAIN, "--set", "train.epochs"], "--set", files=C),
        case("train", "--set without a key", [*TRAIN, "--set", "=3"], "--set", files=C),
        case(
            "train",
            "--set into a value",
            [*TRAIN, "--set", "train.epochs.x=1"],
            "train.epochs",
            files=C,
        ),
        case(
            "train",
            "--set a list",
            [*TRAIN, "--set", "train.epochs=[1, 2]"],
            "train.epochs",
            files=C,
        ),
        case(
            "train",
            "--set an undefined alias",
            [*TRAIN, "--set", "train.epochs=*a"],
            "--set",
            files=C,
        ),
        case(
            "train",
            "--set a python tag",
            [*TRAIN, "--set", "train.epochs=!!python/object/apply:os.system [ls]"],
            "--set",
            files=C,
        ),
        case("train", "--set a NUL byte", [*TRAIN, "--set", "train.device=\x00"], "--set", files=C),
        case(
            "train",
            "--set lr nan",
            [*TRAIN, "--set", "train.optim.lr=.nan"],
            "train.optim.lr",
            files=C,
        ),
        case("train", "--set unknown section", [*TRAIN, "--set", "optim.lr=0.1"], "optim", files=C),
        case(
            "train",
            "refused in a real process",
            TRAIN,
            "train.epochs",
            files={"c.yaml": cfg({"train.epochs": -1})},
            subprocess=True,
            slow=True,
        ),
    ]


def _attack() -> list[Case]:
    def opt(name: str, *extra: str, names: tuple[str, ...], **kw: Any) -> Case:
        argv = ["attack", RUN, "--limit", "8", "--attacks", "fgsm", *extra]
        return case("attack", name, argv, *names, runs=True, **kw)

    pgd = ("--attacks", "pgd", "--set")
    return [
        opt("--eps nan", "--eps", "nan", names=("--eps",)),
        opt("--eps inf", "--eps", "inf", names=("--eps",)),
        opt("--eps -0.1", "--eps=-0.1", names=("--eps",)),
        opt("--eps 0", "--eps", "0", names=("--eps",)),
        opt("--eps text", "--eps", "big", names=("--eps",)),
        opt("--eps empty", "--eps", "", names=("--eps",)),
        opt("--eps commas", "--eps", ",,", names=("--eps",)),
        opt("--limit 0", "--limit", "0", names=("--limit",)),
        opt("--limit -5", "--limit=-5", names=("--limit",)),
        opt("--limit text", "--limit", "all", names=("--limit",)),
        opt("--attacks empty", "--attacks", "", names=("--attacks",)),
        opt("--attacks commas", "--attacks", ",", names=("--attacks",)),
        opt("--attacks unknown", "--attacks", "fgsm,bogus", names=("bogus",)),
        opt("--set text steps", *pgd, "pgd.steps=abc", names=("steps",)),
        opt("--set negative steps", *pgd, "pgd.steps=-1", names=("steps",)),
        opt("--set a list", *pgd, "pgd.steps=[1, 2]", names=("steps",)),
        opt("--set a mapping", *pgd, "pgd.norm={a: 1}", names=("norm",)),
        opt("--set an unknown norm", *pgd, "pgd.norm=l7", names=("norm",)),
        opt("--set restarts 0", *pgd, "pgd.restarts=0", names=("restarts",)),
        opt("--set eps nan", "--set", "fgsm.eps=.nan", names=("eps",)),
        opt("--set unknown option", "--set", "fgsm.bogus=1", names=("bogus",)),
        opt("--set unknown attack", "--set", "pgd.steps=1", names=("pgd",)),
        opt("--set without =", "--set", "fgsm.eps", names=("--set",)),
        opt("--set a python tag", "--set", "fgsm.eps=!!python/name:os.system", names=("--set",)),
        opt("--device unknown", "--device", "bogus", names=("--device",)),
        opt("--device cuda:9", "--device", "cuda:9", names=("--device",)),
        opt(
            "--device cuda on a CPU machine",
            "--device",
            "cuda",
            names=("--device",),
            codes=(0,) if CUDA else (2,),
        ),
        opt("--seed -1", "--seed=-1", names=("--seed",)),
        opt("--seed 2**70", "--seed", str(2**70), names=("--seed",)),
        opt(
            "--store random bytes",
            "--store",
            "s.db",
            names=("s.db",),
            files={"s.db": b"\x01" * 300},
        ),
        case("attack", "target missing", ["attack", "nowhere"], "nowhere"),
        case("attack", "a folder without config.yaml", ["attack", "d"], "d", files={"d/x": "x"}),
        case("attack", "a config file as target", ["attack", "c.yaml"], "c.yaml", files=C),
        case(
            "attack",
            "a checkpoint without config",
            ["attack", "w.pt"],
            "w.pt",
            files={"w.pt": state_only},
        ),
        case(
            "attack",
            "run dir without checkpoints",
            ["attack", RUN],
            "checkpoint",
            runs=True,
            files={"x": remove(CKPT, LAST)},
        ),
        case(
            "attack",
            "run dir with another model's checkpoint",
            ["attack", RUN, "--limit", "4"],
            "best.pt",
            runs=True,
            files=run_with(other_model_checkpoint),
        ),
        case(
            "attack",
            "run dir whose config is garbage",
            ["attack", RUN],
            "config.yaml",
            runs=True,
            files={f"{RUN}/config.yaml": b"\xff\xfe\x00garbage"},
        ),
        case(
            "attack",
            "run dir whose config has a bad field",
            ["attack", RUN],
            "train.epochs",
            runs=True,
            files={f"{RUN}/config.yaml": cfg({"train.epochs": "many"})},
        ),
        case(
            "attack",
            "run dir whose weights are not its config's CTC model",
            ["attack", RUN],
            "do not fit the model its config describes",
            runs=True,
            files={f"{RUN}/config.yaml": cfg({"train.loss": "ctc", "model.name": "crnn"})},
        ),
        case(
            "attack",
            "read-only run dir",
            ["attack", RUN, "--limit", "4", "--attacks", "fgsm", "--eps", "0.3"],
            RUN,
            runs=True,
            readonly=RUN,
        ),
    ]


def _count() -> list[Case]:
    def opt(name: str, *argv: str, names: tuple[str, ...], **kw: Any) -> Case:
        return case("count", name, ["count", *argv], *names, **kw)

    return [
        opt("model unknown", "bogus", names=("bogus",)),
        opt("model empty", "", names=("model",)),
        opt("wrn depth not 6n+4", "wrn-27-2", names=("depth",)),
        opt("wrn width 0", "wrn-28-0", names=("width",)),
        opt("wrn of words", "wrn-a-b", names=("wrn-a-b",)),
        opt("--input trailing x", "simple-cnn", "--input", "1x8x", names=("--input",)),
        opt("--input negative", "simple-cnn", "--input", "1x-8x8", names=("--input",)),
        opt("--input text", "simple-cnn", "--input", "big", names=("--input",)),
        opt("--input zeros", "simple-cnn", "--input", "0x0x0", names=("--input",)),
        opt("--input huge", "simple-cnn", "--input", f"1x{10**20}x8", names=("--input",)),
        opt("--conv unknown", "simple-cnn", "--conv", "bogus", names=("bogus",)),
        opt("--conv empty", "simple-cnn", "--conv", "", names=("--conv|substitute",)),
        opt("--conv LR_inf", "simple-cnn", "--conv", "LR_inf", names=("LR",)),
        opt("--conv Generic_nan", "simple-cnn", "--conv", "Generic_nan", names=("Generic",)),
        opt("--conv Shuffle_0", "simple-cnn", "--conv", "Shuffle_0", names=("Shuffle",)),
        opt("--conv Hashed_2", "simple-cnn", "--conv", "Hashed_2", names=("Hashed",)),
        opt("--convention unknown", "simple-cnn", "--convention", "flops", names=("flops",)),
        opt(
            "--budget nan",
            "simple-cnn",
            "--conv",
            "Generic",
            "--budget",
            "nan",
            names=("--budget",),
        ),
        opt(
            "--budget text",
            "simple-cnn",
            "--conv",
            "Generic",
            "--budget",
            "many",
            names=("--budget",),
        ),
        opt(
            "--budget 1e400",
            "simple-cnn",
            "--conv",
            "Generic",
            "--budget",
            "1e400",
            names=("--budget",),
        ),
        opt("--budget without --conv", "simple-cnn", "--budget", "100", names=("--budget",)),
        opt(
            "--budget-macs -1",
            "simple-cnn",
            "--conv",
            "Generic",
            "--budget-macs=-1",
            names=("--budget-macs",),
        ),
        opt("--num-classes 0", "simple-cnn", "--num-classes", "0", names=("--num-classes",)),
        opt(
            "--num-classes 10**14",
            "simple-cnn",
            "--num-classes",
            str(10**14),
            names=("--num-classes",),
        ),
        opt("--depth -1", "simple-cnn", "--depth=-1", names=("--depth",)),
    ]


def _inspect() -> list[Case]:
    def opt(name: str, *extra: str, names: tuple[str, ...], **kw: Any) -> Case:
        argv = ["inspect", RUN, "-o", "ins", "--max-examples", "16", *extra]
        return case("inspect", name, argv, *names, runs=True, **kw)

    return [
        opt("--layer unknown", "--layer", "bogus", names=("bogus",)),
        opt("--layer empty", "--layer", "", names=("--layer|layer",), codes=(0, 2), slow=True),
        opt("--layer not a conv", "--layer", "net", names=("net",)),
        opt("--channel beyond the layer", "--channel", "99999", names=("99999",)),
        opt("--channel -2", "--channel=-2", names=("--channel",)),
        opt("--channel text", "--channel", "x", names=("--channel",)),
        opt("--top 0", "--top", "0", names=("--top",)),
        opt("--steps 0", "--featurevis", "--steps", "0", names=("--steps",)),
        opt("--max-examples -1", "--max-examples=-1", names=("--max-examples",)),
        opt("--split unknown", "--split", "val", names=("--split",)),
        opt("--seed -1", "--seed=-1", names=("--seed",), codes=(0, 2), slow=True),
        opt("-o an existing file", "-o", "f", names=("f",), files={"f": "mine"}),
        opt(
            "-o a folder with my index.html",
            "-o",
            "mine",
            names=("index.html",),
            files={"mine/index.html": "<h1>notes</h1>"},
        ),
        opt(
            "-o a read-only folder",
            "-o",
            "ro/ins",
            names=("ro",),
            files={"ro/k": "k"},
            readonly="ro",
        ),
        case("inspect", "run dir missing", ["inspect", "nowhere", "-o", "ins"], "nowhere"),
        case("inspect", "run dir is a file", ["inspect", "c.yaml", "-o", "ins"], "c.yaml", files=C),
        opt(
            "metrics.jsonl garbage",
            names=("metrics.jsonl",),
            files={f"{RUN}/metrics.jsonl": b"{not json\n\xff\n"},
        ),
        opt(
            "config.yaml with a bad field",
            names=("train.epochs",),
            files={f"{RUN}/config.yaml": cfg({"train.epochs": -3})},
        ),
        opt(
            "summary.json garbage",
            names=("summary.json",),
            codes=(0, 2),
            files={f"{RUN}/summary.json": "{"},
        ),
        opt("no checkpoints", names=("checkpoint",), files={"x": remove(CKPT, LAST)}),
    ]


def _lr_find() -> list[Case]:
    def opt(name: str, *extra: str, names: tuple[str, ...], **kw: Any) -> Case:
        files = kw.pop("files", C)
        argv = ["lr-find", "c.yaml", "--iters", "5", *extra]
        return case("lr-find", name, argv, *names, files=files, **kw)

    return [
        opt("--start-lr nan", "--start-lr", "nan", names=("--start-lr",)),
        opt("--start-lr 0", "--start-lr", "0", names=("--start-lr",)),
        opt("--start-lr -1", "--start-lr=-1", names=("--start-lr",)),
        opt("--end-lr inf", "--end-lr", "inf", names=("--end-lr",)),
        opt("--end-lr 1e308", "--end-lr", "1e308", "-o", "lr", names=("--end-lr",), codes=(0, 2)),
        opt("--end-lr below --start-lr", "--start-lr", "1", "--end-lr", "0.1", names=("--end-lr",)),
        opt("--iters 2", "--iters", "2", names=("--iters",)),
        opt("--iters text", "--iters", "x", names=("--iters",)),
        opt("-o an existing file", "-o", "f", names=("f",), files=C | {"f": "mine"}),
        opt(
            "-o a folder with my lr_find.png",
            "-o",
            "o",
            names=("lr_find.png",),
            files=C | {"o/lr_find.png": b"mine"},
        ),
        opt(
            "-o a read-only folder",
            "-o",
            "ro/o",
            names=("ro",),
            files=C | {"ro/k": "k"},
            readonly="ro",
        ),
        opt("config missing", names=("c.yaml",), files={}),
        opt(
            "config field wrong",
            names=("train.optim.lr",),
            files={"c.yaml": cfg({"train.optim.lr": "fast"})},
        ),
        opt(
            "batch larger than the data",
            names=("batch_size",),
            files={"c.yaml": cfg({"data.batch_size": 100000})},
        ),
        opt(
            "num_classes below the data's",
            names=("num_classes",),
            files={"c.yaml": cfg({"model.num_classes": 3})},
        ),
        opt(
            "device cuda:5",
            names=("train.device",),
            files={"c.yaml": cfg({"train.device": "cuda:5"})},
        ),
        opt(
            "ctc loss",
            names=("ctc",),
            files={"c.yaml": cfg({"train.loss": "ctc", "model.name": "crnn"})},
        ),
    ]


def verb_cases() -> list[Case]:
    """Every listed case of cli, train, attack, count, inspect and lr-find."""
    return [*_cli(), *_train(), *_attack(), *_count(), *_inspect(), *_lr_find()]
