"""Hand-listed hostile options of the verbs that plan, run, query and report on many runs:
sweep plan, sweep run, sweep search, runs, report, demo and cloud prices."""

from __future__ import annotations

from typing import Any

from fuzz_files import CUDA, case, store_of_another_app
from fuzz_harness import TINY_SEARCH, TINY_SWEEP, Case

__all__ = ["many_run_cases"]

NO_AWS = (("AWS_EC2_METADATA_DISABLED", "true"), ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"))
NO_AWS += (("AWS_CONFIG_FILE", "/nonexistent"), ("AWS_ACCESS_KEY_ID", ""))


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


def many_run_cases() -> list[Case]:
    """Every listed case of sweep plan/run/search, runs, report, demo and cloud prices."""
    return [*_sweeps(), *_runs(), *_report(), *_demo(), *_cloud()]
