import multiprocessing
import sqlite3

import pytest

from nettle.experiment.store import Store, StoreError


def test_runs_status_metrics_and_queries(tmp_path):
    store = Store(tmp_path / "nettle.db")
    assert store.add_run("a1", {"train": {"seed": 0}}, sweep="s", name="seed=0")
    assert not store.add_run("a1", {"other": 1})  # an existing id is never overwritten
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
        multiprocessing.get_context("spawn").Process(target=_writer, args=(path, w))
        for w in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    runs = Store(path).query(status="done")
    assert len(runs) == 200 and all(r["metrics"]["i"] == int(r["id"].split("-")[1]) for r in runs)
