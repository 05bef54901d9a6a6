"""The HTML report in a real headless browser (slow suite; needs /usr/bin/chromium)."""

import shutil
from pathlib import Path

import pytest

from nettle.experiment.report import Section, write_report

CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
)
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (make test-slow installs it)"),
]


def _records():
    accs = {"teacher": 0.98, "sep": 0.96, "shuffle": 0.93, "lowrank": 0.95}
    return [
        {
            "name": name,
            "conv": name,
            "params": 1000 * (i + 1) ** 2,
            "macs": 30_000 * (i + 1) ** 2,
            "test_acc": acc,
            "robustness": {"pgd": {0.1: acc / 2, 0.2: acc / 5}},
            "history": [{"epoch": e, "train_loss": 1 / e, "test_acc": acc} for e in (1, 2, 3)],
        }
        for i, (name, acc) in enumerate(accs.items())
    ]


def test_report_opens_sorts_and_shows_its_images(tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    out = tmp_path / "report"
    plots = write_report(_records(), tmp_path / "plots").plots
    section = Section("Extra", text=["an embedded image"], images={"curve": plots["robustness"]})
    files = write_report(_records(), out, title="browser check", sections=[section])
    errors = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(files.html.as_uri())
        page.wait_for_load_state("load")

        def names():
            return page.eval_on_selector_all(
                "table.sortable tbody tr", "rows => rows.map(r => r.cells[0].textContent)"
            )

        assert names() == ["teacher", "sep", "shuffle", "lowrank"]
        header = page.locator("table.sortable th", has_text="test acc")
        header.click()
        assert names() == ["shuffle", "lowrank", "sep", "teacher"]  # ascending accuracy
        header.click()
        assert names() == ["teacher", "sep", "lowrank", "shuffle"]
        page.locator("table.sortable th", has_text="params").click()
        assert names() == ["teacher", "sep", "shuffle", "lowrank"]  # numeric, not text order
        widths = page.eval_on_selector_all(
            "img", "imgs => imgs.map(i => i.complete && i.naturalWidth)"
        )
        assert len(widths) == 5 and all(w > 0 for w in widths)
        shot = out / "screenshot.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert errors == []
    assert shot.stat().st_size > 50_000
