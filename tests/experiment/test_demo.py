from nettle.experiment.demo import BUDGET_FRACTION, run_demo


def test_demo_trains_teacher_and_budgeted_students(tmp_path):
    result = run_demo(tmp_path, epochs=2, attack_examples=24)
    names = [r["name"] for r in result.records]
    assert names == ["teacher", "student-generic", "student-hashed"]
    budget = result.records[0]["params"] * BUDGET_FRACTION
    for student in result.records[1:]:
        assert abs(student["params"] - budget) / budget < 0.01
        assert student["test_acc"] is not None
    # the hashed student executes the dense multiply-adds; the low-rank one saves them
    teacher, generic, hashed = result.records
    assert hashed["macs_executed"] == teacher["macs"] and generic["macs"] < teacher["macs"] / 2
    assert result.html.is_file() and result.report.is_file()
    md = result.report.read_text()
    assert set(teacher["robustness"]) == {"fgsm", "pgd", "cw"}
    assert "robustness.png" in md
    assert "| student-generic |" in md and "teacher" in md and "Where the training time went" in md
    again = run_demo(
        tmp_path, epochs=2, attack_examples=24
    )  # finished runs are reused, not retrained
    assert [r["test_acc"] for r in again.records] == [r["test_acc"] for r in result.records]
