import yaml

from nettle.experiment.demo import BUDGET_FRACTION, STUDENT_SWEEP, TEACHER_SWEEP, run_demo
from nettle.experiment.store import Store

QUICK = {"epochs": 1, "attack_examples": 24, "attacks": {"fgsm": {}, "pgd": {"steps": 2}}}
QUICK |= {"eps": (0.1,), "featurevis_steps": 8}


def test_demo_runs_its_sweeps_through_the_store_and_reports(tmp_path):
    events = []
    result = run_demo(tmp_path, **QUICK, progress=lambda e, i: events.append((e, i)))
    by_name = {r["name"]: r for r in result.records}
    assert set(by_name) == {"teacher", "student-generic", "student-hashed"}
    teacher, generic, hashed = (
        by_name[n] for n in ("teacher", "student-generic", "student-hashed")
    )
    budget = teacher["params"] * BUDGET_FRACTION
    for student in (generic, hashed):
        assert abs(student["params"] - budget) / budget < 0.01
        assert student["test_acc"] >= (0.45 if student is hashed else 0.15)  # chance: 0.1
        assert student["config"]["distill"]["teacher"] == teacher["run_dir"]
    # the hashed student executes the dense multiply-adds; the low-rank one saves them
    assert hashed["macs_executed"] == teacher["macs"] and generic["macs"] < teacher["macs"] / 2
    # robustness was measured inside the jobs and recorded in the store
    store = Store(tmp_path / "nettle.db")
    rows = store.query()
    assert {r["sweep"] for r in rows} == {TEACHER_SWEEP, STUDENT_SWEEP}
    for row in rows:
        assert row["status"] == "done"
        got = {(r["attack"], r["eps"], r["examples"]) for r in row["robustness"]}
        assert got == {("fgsm", 0.1, 24), ("pgd", 0.1, 24)}
    assert set(teacher["robustness"]) == {"fgsm", "pgd(steps=2)"}
    # the sweeps are files a user can run again; the students' budget was solved at plan time
    students = yaml.safe_load((tmp_path / "sweeps" / f"{STUDENT_SWEEP}.yaml").read_text())
    assert students["base"]["model"]["budget"] == {"params": budget}
    assert students["base"]["evaluate"]["attacks"] == QUICK["attacks"]
    for student in (generic, hashed):
        assert student["config"]["model"]["budget"]["achieved"] == student["params"]
    evals = tmp_path / TEACHER_SWEEP / teacher["id"] / "eval"
    inspected = [p for p in evals.glob("inspect-*") if p.is_dir()]
    assert len(inspected) == 1 and (inspected[0] / "filters.png").is_file()
    # one job per model: the students start once the teacher's training has ended, while its
    # job goes on with its attacks and inspection
    starts = [i["name"] for e, i in events if e == "start"]
    assert sorted(starts) == ["student-generic", "student-hashed", "teacher"]
    assert starts[0] == "teacher" and set(result.seconds) >= {"teacher training", "total"}
    staged = [e for e, i in events if e == "students" or (e, i.get("name")) == ("done", "teacher")]
    assert staged == ["students", "done"]  # the teacher's job ended after the students began
    # the report: HTML and Markdown from the store, the teacher's inspection, the timing table
    assert result.html.is_file() and result.report.is_file()
    md = result.report.read_text()
    assert "robustness.png" in md and "| student-generic |" in md and "Statuses: 3 done." in md
    assert "### Inside the teacher" in md and "![first-layer filters](" in md
    assert "feature visualisation, channel" in md and "Where the time went" in md
    page = result.html.read_text()
    assert page.count('src="data:image/png;base64,') == 4 + 5
    # a second call skips the finished runs and rebuilds the report from the store
    events.clear()
    again = run_demo(
        tmp_path,
        **QUICK,
        inspect=False,
        progress=lambda e, i: events.append((e, i)),
    )
    assert sum(e == "skip" for e, _ in events) == 3 and not any(e == "start" for e, _ in events)
    assert {r["name"]: r["test_acc"] for r in again.records} == {
        n: r["test_acc"] for n, r in by_name.items()
    }
