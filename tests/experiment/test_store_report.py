"""Reports built from the run store and the run dirs."""

import json

import pytest
import yaml

from nettle.cli import main
from nettle.experiment.spec import plan_sweep
from nettle.experiment.store import Store
from nettle.experiment.store_report import (
    NoRunsError,
    attack_label,
    records_from_rows,
    report_from_store,
    robustness_curves,
    sweep_spec,
)

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
        store.record_metrics(run.id, {"params": params, "macs": macs, "best_test_acc": acc})
        store.record_robustness(
            run.id,
            [
                {
                    "attack": "pgd",
                    "options": {"steps": 10},
                    "eps": e,
                    "accuracy": a,
                    "examples": 360,
                }
                for e, a in ((0.1, acc / 2), (0.2, acc / 8))
            ],
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


def test_report_from_store_lists_failures_apart_and_plots_the_done_runs(tmp_path):
    store, _ = _store(tmp_path)
    files = report_from_store(store, tmp_path / "report", sweep="widths")
    assert sorted(r["name"] for r in files.records) == ["narrow", "wide"]
    wide = next(r for r in files.records if r["name"] == "wide")
    assert wide["robustness"] == {"pgd(steps=10)": {0.1: 0.485, 0.2: 0.97 / 8}}
    assert (wide["family"], wide["mode"], wide["conv"]) == ("Conv", "plain", "Conv")
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


@pytest.mark.parametrize(
    ("attack", "options", "label"),
    [
        ("fgsm", {}, "fgsm"),
        ("pgd", None, "pgd"),
        ("pgd", {"steps": 10}, "pgd(steps=10)"),
        ("cw", {"steps": 50, "c": 1.0, "kappa": 0.5}, "cw(c=1,kappa=0.5,steps=50)"),
    ],
)
def test_attack_label_sorts_the_options(attack, options, label):
    assert attack_label(attack, options) == label


def _row(i, conv, extra=None, **fields):
    config = {"name": f"run{i}", "model": {"conv": conv}} | (extra or {})
    return {
        "id": f"id{i}",
        "sweep": "s",
        "name": f"run{i}",
        "status": "done",
        "reason": None,
        "config": config,
        "run_dir": None,
    } | fields


def test_records_from_hand_built_rows():
    robust = [
        {"attack": "pgd", "options": {"steps": 10}, "eps": 0.2, "accuracy": 0.1, "examples": 360},
        {"attack": "pgd", "options": {"steps": 10}, "eps": 0.1, "accuracy": 0.3, "examples": 100},
        {"attack": "pgd", "options": {"steps": 10}, "eps": 0.1, "accuracy": 0.31, "examples": 360},
        {"attack": "fgsm", "options": {}, "eps": 0.1, "accuracy": 0.5, "examples": 360},
    ]
    rows = [
        _row(
            0,
            "Generic_0.1",
            {"distill": {"teacher": "t"}},
            metrics={"params": 900.0, "macs": 1e4, "best_test_acc": 0.9, "test_acc": 0.8},
            robustness=robust,
            robustness_warnings=["pgd: loss flat"],
        ),
        _row(
            1,
            "ACDC_12",
            {"adversarial": {"eps": 0.03}},
            metrics={"test_acc": 0.7, "test_top5": 0.99},
        ),
        _row(2, None, {"bayes": {"threshold": -3.0}}),
        _row(3, "HashedDecimate", status="failed", reason="exit 1: boom"),
    ]
    done, unfinished = records_from_rows(rows)
    assert unfinished == [{"name": "run3", "status": "failed", "reason": "exit 1: boom"}]
    first, second, third = done
    assert (first["conv"], first["family"], first["mode"]) == (
        "Generic_0.1",
        "Generic",
        "distilled",
    )
    assert (second["family"], second["mode"]) == ("ACDC", "adversarial")
    assert (third["conv"], third["family"], third["mode"]) == ("Conv", "Conv", "bayes")
    assert first["robustness"] == {"fgsm": {0.1: 0.5}, "pgd(steps=10)": {0.1: 0.31, 0.2: 0.1}}
    assert list(first["robustness"]["pgd(steps=10)"]) == [0.1, 0.2]
    assert first["warnings"] == ["pgd: loss flat"] and second["warnings"] == []
    assert (first["params"], first["macs"], first["test_acc"], first["test_top5"]) == (
        900.0,
        1e4,
        0.9,
        None,
    )
    assert (second["test_acc"], second["test_top5"]) == (0.7, 0.99)
    assert (third["params"], third["test_acc"], third["robustness"]) == (None, None, {})
    assert robustness_curves([]) == {}


def test_cli_report_draws_reference_points_and_refuses_a_bad_file(tmp_path, capsys):
    _store(tmp_path)
    refs = tmp_path / "papers.csv"
    refs.write_text("name,params,macs,error\nWide paper,5000,,2.5\n")
    out = tmp_path / "r"
    args = ["report", "--root", str(tmp_path), "-o", str(out), "--references"]
    assert main([*args, str(refs)]) == 0
    assert "Wide paper (5,000 params, 2.5% error)" in (out / "report.md").read_text()
    refs.write_text("name,params,macs,error\nWide paper,5000,,many\n")
    assert main([*args, str(refs)]) == 2
    err = capsys.readouterr().err
    assert str(refs) in err and "row 1, field 'error'" in err


def test_report_never_replaces_a_file_it_did_not_write(tmp_path):
    from nettle.experiment.store_report import report_from_store as report

    store = Store(tmp_path / "nettle.db")
    store.add_run("r1", {"model": {"conv": None}}, sweep="s", name="one")
    store.record_metrics("r1", {"params": 10, "test_acc": 0.5})
    store.set_status("r1", "done")
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.md").write_text("my notes")
    with pytest.raises(ValueError, match=r"report\.md: exists and was not written by nettle"):
        report(store, out)
    assert sorted(p.name for p in out.iterdir()) == ["report.md"]
    assert (out / "report.md").read_text() == "my notes"
    (out / "report.md").unlink()
    first = report(store, out)
    again = report(store, out)  # its own files are nettle's to replace
    assert again.html == first.html and (out / "sweep-s.yaml").is_file()
