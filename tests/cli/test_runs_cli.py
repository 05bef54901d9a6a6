import csv
import io
import json
import sys

import pytest

from nettle.cli import main
from nettle.cli.runs import format_count, format_percent, worst_robust_accuracy
from nettle.experiment import record
from nettle.experiment.store import Store

LONG = "train.seed=1,train.optim.lr=0.1,model.conv=Generic_0.5"


@pytest.fixture
def store_path(tmp_path):
    """Four runs: two done (one with robust accuracies), one failed on old code, one planned."""
    path = tmp_path / "nettle.db"
    store = Store(path)

    def add(run_id, name, status, metrics, code="abc123", reason=None):
        store.add_run(run_id, {"name": name, "train": {"seed": len(name)}}, sweep="sw", name=name)
        if status != "planned":
            store.claim(run_id, "me", code)
            if status == "failed":
                store.record_failure(run_id, reason)
            else:
                store.set_status(run_id, status)
        store.record_metrics(run_id, metrics)

    add(
        "0123456789ab",
        LONG,
        "done",
        {
            "test_acc": 0.9972,
            "best_test_acc": 0.998,
            "params": 94213,
            "macs": 2379008,
            "robust_acc_pgd_eps0p1": 0.5123,
            "robust_acc_fgsm_eps0p1": 0.61,
            "robust_clean_acc": 0.99,
        },
    )
    add("fedcba987654", "teacher", "done", {"test_acc": 0.91, "params": 1199882, "macs": 5.24e9})
    add("aaaabbbbcccc", "bad", "failed", {}, code="old999", reason="exit 1: ValueError: bad seed")
    add("ddddeeeeffff", "todo", "planned", {})
    return path


def _lines(capsys):
    return [line.rstrip() for line in capsys.readouterr().out.splitlines()]


def test_counts_and_percentages_for_people():
    counts = [0, 850, 999, 1000, 94_213, 999_499, 999_999, 1_199_882, 2_379_008, 123_456_789]
    assert [format_count(n) for n in counts] == [
        "0",
        "850",
        "999",
        "1.00k",
        "94.2k",
        "999k",
        "1.00M",
        "1.20M",
        "2.38M",
        "123M",
    ]
    assert (format_count(5.24e9), format_count(3.1e12), format_count(None)) == (
        "5.24G",
        "3.10T",
        "",
    )
    assert (format_percent(0.9972), format_percent(1.0), format_percent(None)) == (
        "99.72",
        "100.00",
        "",
    )


def test_worst_robust_accuracy_reads_metrics_and_rows():
    row = {"metrics": {"robust_acc_pgd_eps0p1": 0.5, "robust_clean_acc": 0.2, "test_acc": 0.1}}
    assert worst_robust_accuracy(row) == 0.5
    assert worst_robust_accuracy(row | {"robustness": [{"accuracy": 0.25}]}) == 0.25
    assert worst_robust_accuracy({"metrics": {"test_acc": 0.9}}) is None


def test_table_fits_80_columns(store_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["runs", "--store", str(store_path)]) == 0
    lines = _lines(capsys)
    assert lines[0] == f"4 runs in {store_path}"  # never wrapped
    assert max(len(line) for line in lines[1:]) <= 80
    assert lines[2:] == [
        "  id         name                  status    params    MACs   acc %   robust %",
        " " + "─" * 78,
        "  01234567   train.seed=1,train…   done       94.2k   2.38M   99.72      51.23",
        "  fedcba98   teacher               done       1.20M   5.24G   91.00",
        "  aaaabbbb   bad                   failed",
        "  ddddeeee   todo                  planned",
        "",
        "aaaabbbb failed: exit 1: ValueError: bad seed",
    ]


def test_narrow_table_drops_the_least_important_columns(store_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "56")
    assert main(["runs", "--store", str(store_path), "--status", "done"]) == 0
    lines = _lines(capsys)
    assert lines[2:6] == [
        "  id         name            status   acc %   robust %",
        " " + "─" * 54,
        "  01234567   train.seed=1…   done     99.72      51.23",
        "  fedcba98   teacher         done     91.00",
    ]
    monkeypatch.setenv("COLUMNS", "40")
    assert main(["runs", "--store", str(store_path), "--status", "done"]) == 0
    assert _lines(capsys)[2:6:2] == ["  id         status   acc %", "  01234567   done     99.72"]
    monkeypatch.setenv("COLUMNS", "120")
    assert main(["runs", "--store", str(store_path), "--status", "done"]) == 0
    assert _lines(capsys)[4] == (
        f"  01234567   {LONG}   done      94.2k   2.38M   99.72      51.23"
    )


def test_extra_metric_columns(store_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    args = ["runs", "--store", str(store_path), "--status", "done"]
    assert main([*args, "--metrics", "best_test_acc,robust_clean_acc,nope"]) == 0
    lines = _lines(capsys)
    assert lines[2].endswith("acc %   robust %   best_test_acc %   robust_clean_acc %")
    assert lines[4].endswith("99.72      51.23             99.80                99.00")


def test_csv_has_one_row_per_run_and_every_metric(store_path, capsys):
    assert main(["runs", "--store", str(store_path), "--format", "csv"]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0] == (
        "id,sweep,name,status,code_version,best_test_acc,macs,params,robust_acc_fgsm_eps0p1,"
        "robust_acc_pgd_eps0p1,robust_clean_acc,test_acc"
    )
    first = ["0123456789ab", "sw", LONG, "done", "abc123"]
    teacher = ["fedcba987654", "sw", "teacher", "done", "abc123"]
    assert list(csv.reader(io.StringIO(text)))[1:] == [
        [*first, "0.998", "2379008", "94213", "0.61", "0.5123", "0.99", "0.9972"],
        [*teacher, "", "5240000000", "1199882", "", "", "", "0.91"],
        ["aaaabbbbcccc", "sw", "bad", "failed", "old999", "", "", "", "", "", "", ""],
        ["ddddeeeeffff", "sw", "todo", "planned", "", "", "", "", "", "", "", ""],
    ]
    assert text.splitlines()[1].startswith(f'0123456789ab,sw,"{LONG}",done,')  # quoted commas


def test_json_and_its_alias_give_the_store_rows(store_path, capsys):
    assert main(["runs", "--store", str(store_path), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert main(["runs", "--store", str(store_path), "--json", "--where", "test_acc>0.95"]) == 0
    assert json.loads(capsys.readouterr().out) == [rows[0]]
    expected = json.loads(json.dumps(Store(store_path).query(), default=str))
    assert rows == expected and [r["id"] for r in rows][:2] == ["0123456789ab", "fedcba987654"]


def test_code_changed_keeps_runs_of_other_code(store_path, capsys, monkeypatch):
    monkeypatch.setattr(record, "code_version", lambda: "abc123")
    assert main(["runs", "--store", str(store_path), "--code-changed", "--format", "csv"]) == 0
    assert [r[0] for r in csv.reader(io.StringIO(capsys.readouterr().out))] == [
        "id",
        "aaaabbbbcccc",
    ]
    monkeypatch.setattr(record, "code_version", lambda: "new000")
    assert main(["runs", "--store", str(store_path), "--code-changed", "--json"]) == 0
    ids = [r["id"] for r in json.loads(capsys.readouterr().out)]
    assert ids == ["0123456789ab", "fedcba987654", "aaaabbbbcccc"]  # the planned one never ran


def test_store_to_dataframe(store_path):
    pytest.importorskip("pandas")
    df = Store(store_path).to_dataframe(status="done")
    assert list(df.columns) == [
        *("id", "sweep", "name", "status", "code_version", "config.name", "train.seed"),
        *("best_test_acc", "macs", "params", "robust_acc_fgsm_eps0p1", "robust_acc_pgd_eps0p1"),
        *("robust_clean_acc", "test_acc"),
    ]
    assert df["id"].tolist() == ["0123456789ab", "fedcba987654"]
    assert df["config.name"].tolist() == [LONG, "teacher"]
    assert df["train.seed"].tolist() == [len(LONG), 7]
    assert df["params"].tolist() == [94213.0, 1199882.0]
    assert df["best_test_acc"].iloc[0] == 0.998
    assert df["best_test_acc"].isna().tolist() == [False, True]  # the teacher has none
    empty = Store(store_path).to_dataframe(where=["test_acc>2"])
    assert (len(empty), list(empty.columns)) == (
        0,
        ["id", "sweep", "name", "status", "code_version"],
    )


def test_store_to_dataframe_without_pandas(store_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas raises ImportError
    with pytest.raises(ImportError, match=r"^Store.to_dataframe needs pandas: pip install pandas$"):
        Store(store_path).to_dataframe()
