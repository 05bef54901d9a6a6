"""Hand-listed hostile options of every verb (the loaders' cases are in `fuzz_loaders`)."""

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
from fuzz_harness import TINY_SEARCH, TINY_SWEEP, Case

__all__ = ["verb_cases"]

NO_AWS = (("AWS_EC2_METADATA_DISABLED", "true"), ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"))
NO_AWS += (("AWS_CONFIG_FILE", "/nonexistent"), ("AWS_ACCESS_KEY_ID", ""))


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
            "run dir of a CTC model",
            ["attack", RUN],
            "CTC",
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


def _sweeps() -> list[Case]:
    sweep = {"s.yaml": TINY_SWEEP}

    def plan(name: str, *extra: str, names: tuple[str, ...], files: Any = None, **kw: Any) -> Case:
        argv = ["sweep", "plan", "s.yaml", *extra]
        return case("sweep plan", name, argv, *names, files=sweep | (files or {}), **kw)

    def go(name: str, *extra: str, names: tuple[str, ...], files: Any = None, **kw: Any) -> Case:
        argv = ["sweep", "run", "s.yaml", "--json", *extra]
        return case("sweep run", name, argv, *names, files=sweep | (files or {}), **kw)

    def search(name: str, *extra: str, names: tuple[str, ...], files: Any = None) -> Case:
        argv = ["sweep", "search", "q.yaml", "--json", *extra]
        body = {"q.yaml": TINY_SEARCH} | (files or {})
        return case("sweep search", name, argv, *names, files=body)

    bad_space = TINY_SEARCH.replace(
        "{low: 1.0e-3, high: 0.5, log: true}", "{low: 0, high: 1, log: true}"
    )
    return [
        plan("--price nan", "--price", "nan", names=("--price",)),
        plan("--price -1", "--price=-1", names=("--price",)),
        plan("--price inf", "--price", "inf", names=("--price",)),
        plan("--price text", "--price", "cheap", names=("--price",)),
        plan(
            "--store random bytes",
            "--store",
            "x.db",
            names=("x.db",),
            files={"x.db": b"\x00" * 200},
        ),
        plan("--store a folder", "--store", "x", names=("x",), files={"x/y": "y"}),
        plan(
            "--store another app's database",
            "--store",
            "x.db",
            names=("x.db",),
            files={"x.db": store_of_another_app},
        ),
        case("sweep plan", "file missing", ["sweep", "plan", "nope.yaml"], "nope.yaml"),
        go("--slots 0", "--slots", "0", names=("--slots",)),
        go("--slots -2", "--slots=-2", names=("--slots",)),
        go("--retries -1", "--retries=-1", names=("--retries",)),
        go("--grace nan", "--grace", "nan", names=("--grace",)),
        go("--grace -1", "--grace=-1", names=("--grace",)),
        go("--mem-limit-gb 0", "--mem-limit-gb", "0", names=("--mem-limit-gb",)),
        go("--mem-limit-gb nan", "--mem-limit-gb", "nan", names=("--mem-limit-gb",)),
        go("--gpus empty", "--gpus", "", names=("--gpus",)),
        go("--gpus text", "--gpus", "a,b", names=("--gpus",)),
        go(
            "--gpus 7 on a CPU machine",
            "--gpus",
            "7",
            names=("--gpus",),
            codes=(0, 2) if CUDA else (2,),
        ),
        go("--backend unknown", "--backend", "k8s", names=("--backend",)),
        go(
            "--cpus-per-run 0 (slurm)",
            "--backend",
            "slurm",
            "--cpus-per-run",
            "0",
            names=("--cpus-per-run",),
        ),
        go("--time -5 (slurm)", "--backend", "slurm", "--time=-5", names=("--time",)),
        go("--root a file", "--root", "f", names=("f",), files={"f": "mine"}),
        go(
            "--store random bytes",
            "--store",
            "x.db",
            names=("x.db",),
            files={"x.db": b"\x00" * 200},
        ),
        search("--trials 0", "--trials", "0", names=("--trials",)),
        search("--trials -3", "--trials=-3", names=("--trials",)),
        search("--slots 0", "--trials", "1", "--slots", "0", names=("--slots",)),
        search("--retries -1", "--trials", "1", "--retries=-1", names=("--retries",)),
        search("--sampler unknown", "--trials", "1", "--sampler", "grid", names=("--sampler",)),
        search(
            "no search section", "--trials", "1", names=("search",), files={"q.yaml": TINY_SWEEP}
        ),
        search(
            "log space from 0",
            "--trials",
            "1",
            names=("train.optim.lr",),
            files={"q.yaml": bad_space},
        ),
        search(
            "--store random bytes",
            "--trials",
            "1",
            "--store",
            "x.db",
            names=("x.db",),
            files={"x.db": b"\x07" * 100},
        ),
    ]


def _runs() -> list[Case]:
    def where(expr: str, *names: str, **kw: Any) -> Case:
        argv = ["runs", "--store", "runs/nettle.db", "--where", expr]
        return case("runs", f"--where {expr!r}", argv, *names, runs=True, **kw)

    return [
        case("runs", "store missing", ["runs", "--store", "none.db"], "none.db"),
        case("runs", "store a folder", ["runs", "--store", "d"], "d", files={"d/x": "x"}),
        case("runs", "store of text", ["runs", "--store", "t.db"], "t.db", files={"t.db": "hello"}),
        case("runs", "store empty file", ["runs", "--store", "e.db"], "e.db", files={"e.db": b""}),
        case(
            "runs",
            "store of another app",
            ["runs", "--store", "o.db"],
            "o.db",
            files={"o.db": store_of_another_app},
        ),
        where("", "--where|filter"),
        where("test_acc", "test_acc"),
        where(">0.9", ">0.9"),
        where("test_acc>>0.9", "test_acc"),
        where("test_acc>abc", "test_acc"),
        where("test_acc>null", "null"),
        where(f"params>{10**30}", str(10**30)),
        where(f"train.seed={-(10**30)}", str(-(10**30))),
        where("test_acc>1e400", "test_acc", codes=(0, 2)),
        where("test_acc>nan", "test_acc", codes=(0, 2)),
        where("name=x' OR 1=1 --", "name", codes=(0, 2)),
        where("a.b.c.d.e.f=1", "a.b.c.d.e.f", codes=(0, 2)),
        where("train..seed=1", "train..seed", codes=(0, 2)),
        case(
            "runs",
            "--status unknown",
            ["runs", "--store", "runs/nettle.db", "--status", "lost"],
            "--status|lost",
            runs=True,
        ),
    ]


def _report() -> list[Case]:
    def rep(name: str, *extra: str, names: tuple[str, ...], **kw: Any) -> Case:
        argv = ["report", "--root", "runs", "-o", "rep", *extra]
        return case("report", name, argv, *names, runs=True, **kw)

    return [
        rep("-o an existing file", "-o", "f", names=("f",), files={"f": "mine"}),
        rep(
            "-o a folder with my report.html",
            "-o",
            "mine",
            names=("report.html",),
            files={"mine/report.html": "<p>notes</p>"},
        ),
        rep(
            "-o a read-only folder",
            "-o",
            "ro/rep",
            names=("ro",),
            files={"ro/k": "k"},
            readonly="ro",
        ),
        rep("--store missing", "--store", "none.db", names=("none.db",)),
        rep(
            "--store random bytes",
            "--store",
            "x.db",
            names=("x.db",),
            files={"x.db": bytes(range(97))},
        ),
        rep("--where malformed", "--where", "acc>>1", names=("acc",)),
        rep("--where a huge integer", "--where", f"params<{10**40}", names=(str(10**40),)),
        rep("--references missing", "--references", "p.csv", names=("p.csv",)),
        rep(
            "--references of another kind",
            "--references",
            "p.txt",
            names=("p.txt",),
            files={"p.txt": "x"},
        ),
        rep(
            "--references random bytes",
            "--references",
            "p.csv",
            names=("p.csv",),
            files={"p.csv": bytes(range(128, 256))},
        ),
        rep(
            "--references without columns",
            "--references",
            "p.csv",
            names=("p.csv",),
            files={"p.csv": "a,b\n1,2\n"},
        ),
        rep(
            "--references nan error",
            "--references",
            "p.csv",
            names=("p.csv",),
            files={"p.csv": "name,params,macs,error\nx,100,,nan\n"},
        ),
        rep(
            "--references negative params",
            "--references",
            "p.yaml",
            names=("p.yaml",),
            files={"p.yaml": "- {name: x, params: -5, error: 3}\n"},
        ),
        rep(
            "--references alias bomb",
            "--references",
            "p.yaml",
            names=("p.yaml",),
            files={
                "p.yaml": "a: &a [1,1,1,1,1,1,1,1,1,1]\n"
                + "".join(
                    f"{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n"
                    for p, c in zip("abcdef", "bcdefg")
                )
            },
        ),
    ]


def _demo() -> list[Case]:
    def opt(name: str, *extra: str, names: tuple[str, ...], **kw: Any) -> Case:
        return case("demo", name, ["demo", "-o", "d", *extra], *names, **kw)

    return [
        opt("--epochs -1", "--epochs=-1", names=("--epochs",)),
        opt("--epochs 0", "--epochs", "0", names=("--epochs",)),
        opt("--slots 0", "--slots", "0", names=("--slots",)),
        opt("--slots -3", "--slots=-3", names=("--slots",)),
        opt("--attack-examples 0", "--attack-examples", "0", names=("--attack-examples",)),
        opt("--seed -5", "--seed=-5", names=("--seed",)),
        opt("--seed 2**40", "--seed", str(2**40), names=("--seed",)),
        opt("-o an existing file", "-o", "f", names=("f",), files={"f": "mine"}),
        opt(
            "-o a read-only folder", "-o", "ro/d", names=("ro",), files={"ro/k": "k"}, readonly="ro"
        ),
    ]


def _cloud() -> list[Case]:
    def opt(name: str, *extra: str, names: tuple[str, ...]) -> Case:
        argv = ["cloud", "prices", "--regions", "us-east-1", *extra]
        if "--instance-types" not in extra:
            argv += ["--instance-types", "g5.xlarge"]
        return case("cloud prices", name, argv, *names, env=NO_AWS)

    return [
        opt("--hours nan", "--hours", "nan", names=("--hours",)),
        opt("--hours inf", "--hours", "inf", names=("--hours",)),
        opt("--hours 0", "--hours", "0", names=("--hours",)),
        opt("--hours -24", "--hours=-24", names=("--hours",)),
        opt("--hours 1e300", "--hours", "1e300", names=("--hours",)),
        opt("--instance-types empty", "--instance-types", "", names=("--instance-types",)),
        opt("--instance-types commas", "--instance-types", ",,", names=("--instance-types",)),
        opt("--instance-types odd", "--instance-types", "../../etc", names=("instance types",)),
        opt("--regions empty", "--regions", ",", names=("--regions",)),
    ]


def verb_cases() -> list[Case]:
    """Every listed case of the verbs."""
    return [
        *_cli(),
        *_train(),
        *_attack(),
        *_count(),
        *_inspect(),
        *_lr_find(),
        *_sweeps(),
        *_runs(),
        *_report(),
        *_demo(),
        *_cloud(),
    ]
