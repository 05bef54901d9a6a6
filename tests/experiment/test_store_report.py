"""Reports built from the run store and the run dirs."""

import json

import pytest
import yaml

from nettle.cli import main
from nettle.experiment.job import parse_robustness_metrics, robustness_metrics
from nettle.experiment.spec import plan_sweep
from nettle.experiment.store import Store
from nettle.experiment.store_report import NoRunsError, report_from_store, sweep_spec

SPEC = {
    "name": "widths",
    "base": {"model": {"name": "simple-cnn"}, "train": {"epochs": 2, "device": "cpu"}},
    "list": [
        {"name": "wide", "model.kwargs": {"width": 16}},
        {"name": "narrow", "model.kwargs": {"width": 4}},
        {"name": "broken", "model.conv": "Sep"},
    ],
}


def _store(tmp_path):
    plan = plan_sweep(SPEC)
    store = Store(tmp_path / "nettle.db")
    rows = []
    for run in plan.runs:
        run_dir = tmp_path / "widths" / run.id
        run_dir.mkdir(parents=True)
        rows.append(
            {
                "id": run.id,
                "sweep": "widths",
                "name": run.name,
                "config": run.config.model_dump(mode="json"),
                "run_dir": str(run_dir),
            }
        )
    store.add_runs(rows)
    wide, narrow, broken = plan.runs
    for run, params, macs, acc in ((wide, 9000, 90000, 0.97), (narrow, 1200, 15000, 0.91)):
        store.claim(run.id, "me", code_version="abc123")
        store.set_status(run.id, "done")
        robust = robustness_metrics({"pgd": {0.1: acc / 2, 0.2: acc / 8}})
        store.record_metrics(
            run.id, {"params": params, "macs": macs, "best_test_acc": acc} | robust
        )
        epochs = [
            {"kind": "epoch", "epoch": e, "train_loss": 1 / e, "test_acc": acc} for e in (1, 2)
        ]
        (tmp_path / "widths" / run.id / "metrics.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in epochs) + '{"kind": "epo'  # cut-off line
        )
    store.claim(broken.id, "me", code_version="abc123")
    store.record_failure(broken.id, "exit 1: RuntimeError: boom")
    return store, plan


def test_robustness_metric_names_round_trip():
    curves = {"pgd": {0.05: 0.5, 0.1: 0.25}, "cw_l2": {1e-05: 0.9}}
    flat = robustness_metrics(curves)
    assert "robust_acc_pgd_eps0p05" in flat and all("." not in k for k in flat)
    assert parse_robustness_metrics(flat | {"params": 3}) == curves


def test_report_from_store_lists_failures_apart_and_plots_the_done_runs(tmp_path):
    store, _ = _store(tmp_path)
    files = report_from_store(store, tmp_path / "report", sweep="widths")
    assert sorted(r["name"] for r in files.records) == ["narrow", "wide"]
    wide = next(r for r in files.records if r["name"] == "wide")
    assert wide["robustness"] == {"pgd": {0.1: 0.485, 0.2: 0.97 / 8}}
    assert [h["epoch"] for h in wide["history"]] == [1, 2]
    page = files.html.read_text()
    body = page.split("<h2>Results</h2>")[1].split("<h2>Plots</h2>")[0]
    results, left_out = body.split("<h2>Runs not in the plots</h2>")
    assert results.count("<tr>") == 3 and "broken" not in results
    assert "broken" in left_out and "exit 1: RuntimeError: boom" in left_out
    assert set(files.plots) == {"error_vs_params", "error_vs_macs", "robustness", "learning_curves"}
    md = files.markdown.read_text()
    assert "| wide | Conv | 9,000 | 90,000 | 97.00 | 48.50 | 12.12 |" in md
    assert "Statuses: 2 done, 1 failed." in md and "Code version: abc123." in md
    assert "| broken | failed | exit 1: RuntimeError: boom |" in md
    assert f"nettle sweep run {tmp_path / 'report' / 'sweep-widths.yaml'} --root {tmp_path}" in md


def test_written_sweep_file_plans_the_same_runs(tmp_path):
    store, plan = _store(tmp_path)
    report_from_store(store, tmp_path / "report")
    again = plan_sweep(tmp_path / "report" / "sweep-widths.yaml")
    assert sorted(r.id for r in again.runs) == sorted(r.id for r in plan.runs)
    one = sweep_spec("one", [plan.runs[0].config.model_dump(mode="json")])
    assert "list" not in one and plan_sweep(one).runs[0].id == plan.runs[0].id


def test_no_matching_run_names_the_sweep_and_filter(tmp_path, capsys):
    store, _ = _store(tmp_path)
    with pytest.raises(NoRunsError, match=r"sweep 'nope' and --where test_acc>0.5.*widths"):
        report_from_store(store, tmp_path / "r", sweep="nope", where=["test_acc>0.5"])
    code = main(
        [
            "report",
            "widths",
            "--where",
            "best_test_acc>0.99",
            "--store",
            str(store.path),
            "-o",
            str(tmp_path / "r"),
        ]
    )
    assert code == 2 and "--where best_test_acc>0.99" in capsys.readouterr().err


def test_cli_report_filters_with_where(tmp_path, capsys):
    _store(tmp_path)
    out = tmp_path / "r"
    args = ["report", "--root", str(tmp_path), "--where", "best_test_acc>0.95", "-o", str(out)]
    assert main([*args, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["runs"] == ["wide"] and (out / "report.html").is_file()
    assert yaml.safe_load((out / "sweep-widths.yaml").read_text())["name"] == "widths"
