import multiprocessing
import sqlite3

import pytest

from nettle.experiment.store import Store, StoreError


def test_runs_status_metrics_and_queries(tmp_path):
    store = Store(tmp_path / "nettle.db")
    assert store.add_run("a1", {"train": {"seed": 0}}, sweep="s", name="seed=0")
    assert not store.add_run("a1", {"train": {"seed": 0}})  # an existing id is kept as is
    # the id is the identity: another sweep planning it joins the run, the row is kept
    assert not store.add_run("a1", {"train": {"seed": 0}, "name": "x"}, sweep="t", name="again")
    assert store.get("a1")["config"] == {"train": {"seed": 0}}
    assert store.get("a1")["sweeps"] == ["s", "t"]
    assert [r["name"] for r in store.query(sweep="t")] == ["again"]
    assert [r["id"] for r in store.query(where=["sweep=t"])] == ["a1"]
    store.add_run("b2", {"train": {"seed": 1}}, sweep="s", name="seed=1")
    store.set_status("a1", "running", pid=123, code_version="abc")
    store.set_status("a1", "done")
    store.record_metrics("a1", {"test_acc": 0.97, "params": 1000, "note": "not a number"})
    store.set_status("b2", "running")
    store.set_status("b2", "failed", reason="out of memory", log_tail="MemoryError")
    a = store.get("a1")
    assert a["status"] == "done" and a["attempts"] == 1 and a["config"] == {"train": {"seed": 0}}
    assert a["metrics"] == {"test_acc": 0.97, "params": 1000.0} and a["code_version"] == "abc"
    assert [r["id"] for r in store.query(sweep="s", status="failed")] == ["b2"]
    assert [r["id"] for r in store.query(where=["test_acc>0.9"])] == ["a1"]
    assert store.query(where=["test_acc>0.99"]) == []
    assert store.get("b2")["reason"] == "out of memory"
    # injection attempts are data, not SQL
    assert store.query(where=["name=x' OR '1'='1"]) == []
    with pytest.raises(StoreError, match="expected KEY OP VALUE"):
        store.query(where=["drop table runs"])
    with pytest.raises(ValueError, match="status must be one of"):
        store.set_status("a1", "finished")
    with pytest.raises(KeyError, match="no run 'zz'"):
        store.set_status("zz", "done")


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "nettle.db"
    Store(path)
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="schema version 99 is newer"):
        Store(path)


def _writer(path, worker):
    store = Store(path)
    for i in range(50):
        run_id = f"w{worker}-{i}"
        store.add_run(run_id, {"i": i})
        store.set_status(run_id, "running")
        store.record_metrics(run_id, {"i": i})
        store.set_status(run_id, "done")


def test_concurrent_writers(tmp_path):
    path = tmp_path / "nettle.db"
    Store(path)
    procs = [
        multiprocessing.get_context("fork").Process(target=_writer, args=(path, w))
        for w in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    runs = Store(path).query(status="done")
    assert len(runs) == 200 and all(r["metrics"]["i"] == int(r["id"].split("-")[1]) for r in runs)


def test_config_filters_claims_and_batches(tmp_path):
    store = Store(tmp_path / "nettle.db")
    runs = [
        {"id": f"r{i}", "config": {"train": {"optim": {"lr": lr}}, "model": {"conv": conv}}}
        for i, (lr, conv) in enumerate([(0.1, None), (0.05, "Sep"), (0.1, "Sep")])
    ]
    assert store.add_runs([r | {"sweep": "s"} for r in runs]) == 3
    assert store.add_runs(runs[:1]) == 0  # same config, same id: kept, not added again
    assert [r["id"] for r in store.query(where=["train.optim.lr=0.1"])] == ["r0", "r2"]
    assert [r["id"] for r in store.query(where=["model.conv=null"])] == ["r0"]
    assert [r["id"] for r in store.query(where=["model.conv=Sep", "train.optim.lr<0.1"])] == ["r1"]
    assert store.claim("r0", owner="1:2") and not store.claim("r0", owner="3:4")
    store.set_process("r0", 4321, 4321)
    row = store.get("r0")
    assert (row["status"], row["attempts"], row["pid"], row["pgid"], row["owner"]) == (
        "running",
        1,
        4321,
        4321,
        "1:2",
    )
    store.record_failure("r0", "crashed: SIGSEGV", "Fatal Python error")
    assert store.claim("r0", owner="5:6") and store.get("r0")["attempts"] == 2
    assert store.get("r0")["reason"] is None  # a new attempt clears the old reason
    store.set_status("r0", "done")
    assert not store.claim("r0", owner="5:6")
    with pytest.raises(ValueError, match="status must be one of"):
        store.query(status="finished")


def test_version_1_store_is_migrated(tmp_path):
    path = tmp_path / "nettle.db"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "INSERT INTO meta VALUES ('schema_version', '1');"
        "CREATE TABLE runs (id TEXT PRIMARY KEY, sweep TEXT, name TEXT, run_dir TEXT,"
        " config TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'planned', reason TEXT,"
        " log_tail TEXT, attempts INTEGER NOT NULL DEFAULT 0, code_version TEXT, host TEXT,"
        " pid INTEGER, created REAL NOT NULL, started REAL, finished REAL);"
        "INSERT INTO runs (id, config, created) VALUES ('old', '{}', 0);"
    )
    db.commit()
    db.close()
    store = Store(path)
    assert store.get("old")["pgid"] is None and store.get("old")["status"] == "planned"
    version = sqlite3.connect(path).execute("SELECT value FROM meta").fetchone()[0]
    assert version == "3"


def test_robust_accuracies_are_keyed_by_attack_options_eps_and_examples(tmp_path):
    store = Store(tmp_path / "nettle.db")
    store.add_run("r", {}, sweep="s")
    row = {"attack": "pgd", "options": {"steps": 10}, "eps": 0.1, "accuracy": 0.5, "examples": 9}
    store.record_robustness("r", [row, row | {"eps": 0.2, "accuracy": 0.25}])
    store.record_robustness("r", [row | {"options": {"steps": 40}, "accuracy": 0.375}])
    store.record_robustness("r", [row | {"examples": 3, "accuracy": 1 / 3, "warnings": ["w"]}])
    store.record_robustness("r", [row | {"accuracy": 0.625}])  # the same key: replaced
    got = [
        (r["options"]["steps"], r["eps"], r["examples"], r["accuracy"])
        for r in store.get("r")["robustness"]
    ]
    assert got == [
        (10, 0.1, 3, 1 / 3),
        (10, 0.1, 9, 0.625),
        (10, 0.2, 9, 0.25),
        (40, 0.1, 9, 0.375),
    ]
    assert store.get("r")["robustness_warnings"] == ["w"]


def test_version_2_store_keeps_its_sweeps(tmp_path):
    path = tmp_path / "nettle.db"
    Store(path).add_run("old", {}, sweep="s", name="n")
    db = sqlite3.connect(path)
    db.executescript(
        "DROP TABLE sweep_runs; DROP TABLE robustness;"
        "UPDATE meta SET value='2' WHERE key='schema_version';"
    )
    db.commit()
    db.close()
    store = Store(path)
    assert [(r["id"], r["name"], r["sweeps"]) for r in store.query(sweep="s")] == [
        ("old", "n", ["s"])
    ]
    assert store.get("old")["robustness"] == []


@pytest.mark.parametrize(
    "content", [b"not a database at all\n", b"SQLite format 3\x00" + b"\x01" * 200]
)
def test_a_file_that_is_not_a_store_is_refused_and_left_as_is(tmp_path, content):
    path = tmp_path / "nettle.db"
    path.write_bytes(content)
    with pytest.raises(StoreError, match=r"nettle.db: not a (usable )?run store"):
        Store(path)
    assert path.read_bytes() == content
    with pytest.raises(StoreError, match="no run store there"):
        Store(tmp_path / "missing.db", create=False)
    assert not (tmp_path / "missing.db").exists()


def test_filters_out_of_sqlite_range_are_one_line_errors(tmp_path):
    store = Store(tmp_path / "nettle.db")
    with pytest.raises(StoreError, match="out of range"):
        store.query(where=["attempts>99999999999999999999999"])
    with pytest.raises(StoreError, match="out of range"):
        store.query(where=["test_acc>-99999999999999999999999"])
