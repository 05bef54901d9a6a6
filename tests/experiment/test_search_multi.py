"""Search with several objectives, constraints, pruning and asynchronous trials.

The jobs are a stand-in for `nettle _job`: test_acc is a formula of the learning rate and the
width, each epoch takes a time set by the learning rate, and the job records its own start and
end times in its summary (so they reach the store as metrics).
"""

import itertools
import json
import math
import sys
from pathlib import Path

import pytest

from nettle.config import ConfigError, load_config_dict
from nettle.experiment.report_plots import plot_tradeoff
from nettle.experiment.resolve import plan_cost
from nettle.experiment.search import run_search, study_path_of
from nettle.experiment.search_space import load_search
from nettle.experiment.store import Store
from nettle.experiment.store_report import report_from_store
from nettle.experiment.worker import MARKER

optuna = pytest.importorskip("optuna")
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux processes")

JOB = r"""
import json, math, sys, time
from pathlib import Path
import yaml
t_start = time.time()
cfg = yaml.safe_load(Path(sys.argv[1]).read_text())
run_dir = Path(sys.argv[2])
lr, width = cfg["train"]["optim"]["lr"], cfg["model"]["kwargs"]["width"]
epochs = cfg["train"]["epochs"]
acc = 0.5 + 0.1 * math.log2(width) - 0.05 * (math.log10(lr) + 2) ** 2
pause = 0.1 + 0.5 * (math.log10(lr) + 4)
with open(run_dir / "metrics.jsonl", "w") as f:
    for epoch in range(1, epochs + 1):
        time.sleep(pause)
        record = {"kind": "epoch", "epoch": epoch, "test_acc": acc * epoch / epochs}
        f.write(json.dumps(record) + "\n")
        f.flush()
summary = {"status": "done", "final": {"test_acc": acc, "t_start": t_start, "t_end": time.time()}}
(run_dir / "summary.json").write_text(json.dumps(summary))
"""

BASE = {
    "model": {"name": "simple-cnn", "kwargs": {"width": 4}},
    "train": {"epochs": 1},
    "evaluate": {"count": None},
}
BUDGET = 5000  # simple-cnn on digits: width 2 and 4 fit (496, 1702 params), 8 and 16 do not


def _acc(lr, width):
    return 0.5 + 0.1 * math.log2(width) - 0.05 * (math.log10(lr) + 2) ** 2


def _params(width):
    cfg = load_config_dict({"model": {"name": "simple-cnn", "kwargs": {"width": width}}})
    return plan_cost(cfg)["params"]


@pytest.fixture
def job(tmp_path):
    path = tmp_path / "job.py"
    path.write_text(JOB)
    return lambda config, run_dir: [sys.executable, str(path), str(config), str(run_dir)]


def _longest_idle(intervals, slots):
    """The longest stretch between the first and the last start with a slot free."""
    first, last = min(s for s, _ in intervals), max(s for s, _ in intervals)
    cuts = sorted({first, last, *(t for iv in intervals for t in iv if first <= t <= last)})
    longest = current = 0.0
    for a, b in itertools.pairwise(cuts):
        busy = sum(1 for s, e in intervals if s <= a and e >= b)
        current = current + (b - a) if busy < slots else 0.0
        longest = max(longest, current)
    return longest


def _dominated(p, q):
    """q dominates p: accuracy at least as high and params at most, one strictly."""
    return q[0] >= p[0] and q[1] <= p[1] and (q[0] > p[0] or q[1] < p[1])


def test_multi_objective_search_front_constraints_and_no_idle_slot(tmp_path, job):
    space = {
        "train.optim.lr": {"low": 1.0e-4, "high": 1.0, "log": True},
        "model.kwargs.width": [2, 4, 8, 16],
    }
    spec = {"name": "multi", "base": BASE}
    spec["search"] = {
        "objectives": {"test_acc": "maximize", "params": "minimize"},
        "constraints": [f"params <= {BUDGET}"],
        "sampler": {"name": "nsga2", "population_size": 4},
        "space": space,
    }
    store = Store(tmp_path / "nettle.db")
    result = run_search(spec, 8, store, root=tmp_path, slots=2, command=job, seed=3)

    assert len(result.trials) == 8 and {t.state for t in result.trials} == {"complete"}
    params = {w: _params(w) for w in (2, 4, 8, 16)}
    assert params[4] < BUDGET < params[8]
    for t in result.trials:
        lr, width = t.params["train.optim.lr"], t.params["model.kwargs.width"]
        assert t.values == [pytest.approx(_acc(lr, width)), params[width]]
        assert t.feasible == (params[width] <= BUDGET)
        assert t.violations == {f"params <= {BUDGET}": pytest.approx(params[width] / BUDGET - 1)}
    # the front: the feasible trials no other feasible trial dominates
    feasible = [t for t in result.trials if t.feasible]
    points = {t.number: (t.values[0], t.values[1]) for t in feasible}
    expected = {n for n, p in points.items() if not any(_dominated(p, q) for q in points.values())}
    assert {t.number for t in result.front} == expected and expected
    assert result.best is None  # several objectives: a front, not one best

    # asynchronous trials: from the first start to the last, no slot waits for a batch
    rows = store.query(sweep="multi")
    assert len(rows) == 8 and all(r["status"] == "done" for r in rows)
    intervals = [(r["started"], r["metrics"]["t_end"]) for r in rows]
    durations = [e - s for s, e in intervals]
    assert max(durations) - min(durations) > 1.2  # a batch would leave a slot idle that long
    assert _longest_idle(intervals, 2) < 1.0  # asking Optuna and starting a job, on a busy machine
    assert all(
        r["metrics"]["params"] == params[r["config"]["model"]["kwargs"]["width"]] for r in rows
    )

    files = report_from_store(store, tmp_path / "report", sweep="multi")
    by_id = {r["id"]: r for r in files.records}
    for t in result.trials:
        assert by_id[t.run_id].get("infeasible", False) == (not t.feasible)
        assert by_id[t.run_id].get("front", False) == (t.number in expected)
    page = files.markdown.read_text()
    assert "### Search multi" in page and f"constraints: params <= {BUDGET}" in page
    assert (
        f"8 trials: 8 complete ({len(feasible)} feasible, {8 - len(feasible)} infeasible)" in page
    )
    for t in result.trials:
        status = "front" if t.number in expected else None
        if not t.feasible:
            over = 100 * (params[t.params["model.kwargs.width"]] / BUDGET - 1)
            status = f"infeasible: params <= {BUDGET}: over by {over:.1f}%"
        line = next(
            (ln for ln in page.splitlines() if ln.startswith(f"| {t.number} | {t.run_id}")), None
        )
        assert (line is None) == (status is None) and (status is None or status in line)
    assert "Search multi" in files.html.read_text()

    fig = plot_tradeoff(files.records, "params")
    ax = fig.axes[0]
    crosses = next(c for c in ax.collections if c.get_gid() == "infeasible")
    got = sorted(map(tuple, crosses.get_offsets().tolist()))
    bad = sorted(
        (r["params"], 100 * (1 - r["test_acc"])) for r in files.records if r.get("infeasible")
    )
    assert len(got) == 8 - len(feasible) and got == [pytest.approx(p) for p in bad]
    line = next(ln for ln in ax.lines if ln.get_label() == "Pareto front")
    assert max(line.get_xdata()) <= BUDGET  # the drawn front holds feasible runs only


def test_pruner_stops_worse_runs_and_the_report_lists_them(tmp_path, job):
    # one slot, and the random sampler (seed 2) proposes lr 0.01, 0.01, then 0.1 three times:
    # 0.1 is behind 0.01 at every epoch (test_acc 0.65 against 0.7, scaled by epoch / 2) and
    # slower (1.6 s an epoch), so each 0.1 run is below the median of the finished two at its
    # first epoch and is stopped before its second
    spec = {"name": "pruned", "base": BASE | {"train": {"epochs": 2}}}
    spec["search"] = {
        "metric": "test_acc",
        "sampler": "random",
        "pruner": {"name": "median", "n_startup_trials": 1},
        "space": {"train.optim.lr": [1.0e-2, 1.0e-1], "train.seed": {"low": 0, "high": 10**6}},
    }
    store = Store(tmp_path / "nettle.db")
    result = run_search(spec, 5, store, root=tmp_path, slots=1, command=job, seed=2)
    lrs = [t.params["train.optim.lr"] for t in result.trials]
    assert lrs == [1.0e-2, 1.0e-2, 1.0e-1, 1.0e-1, 1.0e-1]
    assert [t.state for t in result.trials] == ["complete"] * 2 + ["pruned"] * 3
    pruned = result.trials[2:]
    for t in pruned:
        row = store.get(t.run_id)
        assert row["status"] == "pruned" and row["finished"] is not None
        run_dir = Path(row["run_dir"])
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        assert len(lines) == 1 and not (run_dir / "summary.json").exists()
        assert row["reason"] == f"pruned at epoch 1: test_acc {_acc(0.1, 4) / 2:.4g} (median rule)"
        assert not [p for p in Path("/proc").iterdir() if _marked(p, t.run_id)]
    study = optuna.load_study(study_name="pruned", storage=f"sqlite:///{study_path_of(store.path)}")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 2 + ["PRUNED"] * 3
    assert [t.intermediate_values for t in study.trials[2:]] == [{1: _acc(0.1, 4) / 2}] * 3
    assert result.best.params["train.optim.lr"] == 1.0e-2
    assert result.best.value == pytest.approx(_acc(1.0e-2, 4))

    files = report_from_store(store, tmp_path / "report", sweep="pruned")
    page = files.markdown.read_text()
    assert f"{len(pruned)} pruned" in page
    assert page.count("| pruned | pruned at epoch") == len(pruned)


def _marked(proc: Path, run_id: str) -> bool:
    try:
        return f"{MARKER}={run_id}".encode() in (proc / "environ").read_bytes().split(b"\0")
    except OSError:
        return False


def test_search_section_errors_name_the_key():
    space = {"train.optim.lr": [0.1, 0.01]}

    def load(**search):
        return load_search({"name": "s", "base": BASE, "search": {"space": space, **search}})

    spec = load(objectives={"test_acc": "maximize", "macs": "minimize"})
    assert spec.sampler == ("nsga2", {}) and spec.pruner is None
    spec = load(constraints=["params <= 2.0e4", "test_acc >= 0.9"])
    assert [str(c) for c in spec.constraints] == ["params <= 20000", "test_acc >= 0.9"]
    assert spec.sampler == ("tpe", {}) and spec.pruner == ("median", {})
    assert spec.constraints[1].violation(0.81) == pytest.approx(0.1)
    cases = [
        ({"metric": "test_acc", "objectives": {"params": "minimize"}}, "not both"),
        ({"objectives": {"test_acc": "up"}}, r"objectives.test_acc: direction must be"),
        ({"objectives": ["test_acc"]}, "expected a mapping of metric to direction"),
        ({"constraints": ["params < 10"]}, r"'params < 10' is not KEY <= N"),
        ({"constraints": "params <= 10"}, "expected a list"),
        ({"constraints": ["params <= inf"]}, "finite number"),
        ({"sampler": "cmaes"}, r"sampler: unknown 'cmaes'; known: nsga2, nsga3, random, tpe"),
        ({"sampler": {"name": "tpe", "seed": 3}}, r"tpe has no option 'seed'"),
        ({"sampler": {"name": "nsga2", "population_size": 1}}, "sampler: nsga2:"),
        ({"pruner": "percentile"}, "pruner: percentile:.*percentile"),
        ({"pruner": {"name": "median", "warmup": 1}}, r"median has no option 'warmup'"),
        (
            {"objectives": {"test_acc": "maximize", "params": "minimize"}, "pruner": "median"},
            "prunes single-objective searches only",
        ),
        ({"bogus": 1}, "search: unknown key 'bogus'"),
    ]
    for search, message in cases:
        with pytest.raises(ConfigError, match=message):
            load(**search)


def test_satisficing_search_keeps_the_most_accurate_network_within_the_budget(tmp_path, job):
    spec = {"name": "budget", "base": BASE}
    spec["search"] = {
        "metric": "test_acc",
        "constraints": [f"params <= {BUDGET}"],
        "space": {"model.kwargs.width": [2, 4, 16], "train.optim.lr": [0.01, 0.1]},
    }
    result = run_search(spec, 6, tmp_path / "nettle.db", root=tmp_path, slots=2, command=job)
    done = [t for t in result.trials if t.state == "complete"]
    feasible = [t for t in done if t.feasible]
    assert feasible and len(feasible) < len(done)  # some trials broke the budget
    assert max(t.value for t in done) > max(t.value for t in feasible)  # and were more accurate
    best = max(feasible, key=lambda t: t.value)
    assert result.best.params == best.params and result.best.value == best.value
    assert result.front == [result.best] and result.best.feasible


def test_a_metric_the_runs_lack_fails_the_trial_naming_it(tmp_path, job):
    spec = {"name": "lacking", "base": BASE}
    spec["search"] = {
        "objectives": {"test_acc": "maximize", "latency": "minimize"},
        "constraints": ["test_top5 >= 0.9", "params <= 5000"],
        "space": {"train.optim.lr": [0.01]},
    }
    result = run_search(spec, 1, tmp_path / "nettle.db", root=tmp_path, command=job)
    (trial,) = result.trials
    assert trial.state == "fail" and result.front == []
    assert trial.reason.startswith("no finite latency, test_top5 among the run's metrics (")
    assert trial.violations == {"params <= 5000": pytest.approx(_params(4) / 5000 - 1)}


def test_example_search_files_load():
    root = Path(__file__).parents[2] / "examples"
    multi = load_search(root / "search-multi-digits.yaml")
    assert [(o.metric, o.direction) for o in multi.objectives] == [
        ("test_acc", "maximize"),
        ("params", "minimize"),
    ]
    assert [str(c) for c in multi.constraints] == ["params <= 5000"] and multi.pruner is None
    single = load_search(root / "search-digits.yaml")
    assert single.sampler == ("tpe", {}) and single.pruner == ("median", {"n_startup_trials": 2})


def test_a_continued_study_keeps_its_objectives_and_constraints(tmp_path, job):
    spec = {"name": "kept", "base": BASE}
    spec["search"] = {"constraints": ["params <= 5000"], "space": {"train.optim.lr": [0.1, 0.01]}}
    run_search(spec, 1, tmp_path / "nettle.db", root=tmp_path, command=job)
    other = spec | {"search": spec["search"] | {"constraints": ["params <= 9000"]}}
    with pytest.raises(ValueError, match=r"has constraints \['params <= 5000'\]"):
        run_search(other, 1, tmp_path / "nettle.db", root=tmp_path, command=job)
    multi = spec["search"] | {"objectives": {"test_acc": "maximize", "params": "minimize"}}
    with pytest.raises(ValueError, match=r"optimises test_acc \(maximize\), not test_acc"):
        run_search(spec | {"search": multi}, 1, tmp_path / "nettle.db", root=tmp_path, command=job)
    foreign = tmp_path / "other" / "nettle-search.db"
    foreign.parent.mkdir()
    foreign.write_bytes(b"not a database")
    with pytest.raises(ValueError, match="not an Optuna study database; left as is"):
        run_search(spec, 1, tmp_path / "other" / "nettle.db", root=tmp_path, command=job)
    assert foreign.read_bytes() == b"not a database"
    assert sorted(p.name for p in foreign.parent.iterdir()) == ["nettle-search.db"]
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match="has constraints"):
        run_search(other, 1, tmp_path / "nettle.db", root=tmp_path, command=job)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == before


def test_cli_prints_the_front(tmp_path, capsys, monkeypatch, job):
    from nettle.cli import main
    from nettle.experiment import schedule

    monkeypatch.setattr(schedule, "default_command", job)
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: s\nbase: {model: {name: simple-cnn, kwargs: {width: 4}}, evaluate: {count: null}}\n"
        "search:\n  objectives: {test_acc: maximize, params: minimize}\n"
        "  constraints: ['params <= 5000']\n  sampler: random\n"
        "  space:\n    model.kwargs.width: [2, 8]\n    train.optim.lr: [0.01]\n"
    )
    argv = ["sweep", "search", str(path), "--root", str(tmp_path / "runs"), "--trials"]
    assert main([*argv, "3", "--slots", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["constraints"] == ["params <= 5000"] and len(out["trials"]) == 3
    front = out["front"]
    assert [t["params"]["model.kwargs.width"] for t in front] == [2]
    assert front[0]["values"] == [pytest.approx(_acc(0.01, 2)), _params(2)]
    assert main([*argv, "1"]) == 0  # one more trial, printed as text
    text = capsys.readouterr().out
    assert "study s: 4 trials" in text and "constraints params <= 5000" in text
    assert "Pareto front (test_acc, params): 1 trials" in text
    assert f"trial {front[0]['number']}: test_acc = {_acc(0.01, 2):.4g}, params = 496;" in text


def _timed_job(config, run_dir):
    """The real job (`nettle _job`), then the time it exited, in `RUN_DIR/exited`."""
    script = '"$0" -m nettle _job "$1" -o "$2"; s=$?; date +%s.%N > "$2/exited"; exit $s'
    return ["bash", "-c", script, sys.executable, str(config), str(run_dir)]


@pytest.mark.slow
def test_real_digits_multi_objective_search_under_a_parameter_budget(tmp_path):
    """8 trained trials of simple-cnn on digits: accuracy up, parameters down, at most 5000."""
    base = {
        "model": {"name": "simple-cnn", "kwargs": {"width": 4}},
        "data": {"name": "digits", "batch_size": 64, "subset": 400},
        "train": {"epochs": 1, "device": "cpu", "tensorboard": False},
    }
    spec = {"name": "digits-multi", "base": base}
    spec["search"] = {
        "objectives": {"test_acc": "maximize", "params": "minimize"},
        "constraints": [f"params <= {BUDGET}"],
        "sampler": {"name": "nsga2", "population_size": 4},
        "space": {
            "train.optim.lr": {"low": 1.0e-2, "high": 0.3, "log": True},
            "model.kwargs.width": [2, 4, 8, 16],
        },
    }
    store = Store(tmp_path / "nettle.db")
    result = run_search(spec, 8, store, root=tmp_path, slots=2, seed=0, command=_timed_job)
    assert len(result.trials) == 8 and {t.state for t in result.trials} == {"complete"}
    rows = {r["id"]: r for r in store.query(sweep="digits-multi")}
    for t in result.trials:  # the count stage's parameters, equal to the plan's count
        row = rows[t.run_id]
        width = row["config"]["model"]["kwargs"]["width"]
        assert t.values == [row["metrics"]["test_acc"], row["metrics"]["params"]]
        assert row["metrics"]["params"] == _params(width) and t.feasible == (width <= 4)
    points = {t.number: tuple(t.values) for t in result.trials if t.feasible}
    expected = {n for n, p in points.items() if not any(_dominated(p, q) for q in points.values())}
    assert {t.number for t in result.front} == expected and expected

    intervals = [
        (r["started"], float((Path(r["run_dir"]) / "exited").read_text())) for r in rows.values()
    ]
    assert _longest_idle(intervals, 2) < 2.0  # asking, counting and starting on a busy machine

    files = report_from_store(store, tmp_path / "report", sweep="digits-multi")
    page = files.markdown.read_text()
    infeasible = [t for t in result.trials if not t.feasible]
    assert sum(1 for r in files.records if r.get("infeasible")) == len(
        {t.run_id for t in infeasible}
    )
    assert sum(1 for r in files.records if r.get("front")) == len(expected)
    for t in result.front:
        assert f"| {t.number} | {t.run_id} |" in page and "| front |" in page
    for t in infeasible:
        assert f"| {t.number} | {t.run_id} |" in page
    assert page.count("infeasible: params <= 5000: over by") == len(infeasible)
