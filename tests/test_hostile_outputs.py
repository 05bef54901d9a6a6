"""Output folders: nettle replaces only what it wrote, and checks every name first."""

import json
import os

import pytest

from nettle.files import OUTPUTS_MANIFEST, OutputFolder, claim_outputs


def _snapshot(folder):
    return {
        p.relative_to(folder): p.read_bytes() if p.is_file() else None for p in folder.rglob("*")
    }


def test_a_new_folder_is_created_and_its_files_recorded(tmp_path):
    out = claim_outputs(tmp_path / "new" / "pages", ["index.html", "plot.png"])
    out.write("index.html", "<p>1</p>")
    out.write_json("plot.png", {"a": 1})
    manifest = json.loads((tmp_path / "new" / "pages" / OUTPUTS_MANIFEST).read_text())
    assert manifest["written_by"] == "nettle"
    assert set(manifest["files"]) == {"index.html", "plot.png"}
    # nettle's own files are replaced on the next run
    again = claim_outputs(out.folder, ["index.html"])
    again.write("index.html", "<p>2</p>")
    assert (out.folder / "index.html").read_text() == "<p>2</p>"


def test_a_file_nettle_did_not_write_is_never_replaced(tmp_path):
    (tmp_path / "index.html").write_text("my own page")
    (tmp_path / "notes.txt").write_text("untouched")
    before = _snapshot(tmp_path)
    with pytest.raises(ValueError) as info:
        claim_outputs(tmp_path, ["a.png", "index.html", "index.md"])
    assert str(info.value) == (
        f"{tmp_path / 'index.html'}: exists and was not written by nettle; move it away or "
        "choose another output folder (-o)"
    )
    assert _snapshot(tmp_path) == before  # checked before anything was written, manifest too


def test_a_file_changed_since_nettle_wrote_it_is_the_users(tmp_path):
    out = claim_outputs(tmp_path, ["index.html", "index.md"])
    out.write("index.html", "nettle's page")
    out.write("index.md", "nettle's notes")
    (tmp_path / "index.md").write_text("edited by hand")
    before = _snapshot(tmp_path)
    with pytest.raises(ValueError, match=r"index\.md: exists and was not written by nettle"):
        claim_outputs(tmp_path, ["index.html", "index.md"])
    assert _snapshot(tmp_path) == before


def test_several_foreign_files_are_counted_in_one_line(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        (tmp_path / name).write_bytes(b"x")
    with pytest.raises(ValueError, match=r"a\.png: exists .* by nettle \(and 2 more\); move"):
        OutputFolder(tmp_path).check(["a.png", "b.png", "c.png"])


def test_bad_folders_and_names(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(ValueError, match=rf"^{afile}: is a file, not a folder; choose another"):
        claim_outputs(afile, ["index.html"])
    with pytest.raises(ValueError, match=rf"^{afile}: is a file, not a folder"):
        claim_outputs(afile / "below", ["index.html"])
    with pytest.raises(ValueError, match="'../x' is not a plain file name"):
        claim_outputs(tmp_path / "o", ["../x"])
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / OUTPUTS_MANIFEST).write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"nettle-outputs\.json: not nettle's list of its outputs"):
        claim_outputs(tmp_path / "o", ["index.html"])
    (tmp_path / "o" / "index.html").mkdir()
    (tmp_path / "o" / OUTPUTS_MANIFEST).unlink()
    with pytest.raises(ValueError, match=r"o/index\.html: exists and was not written"):
        claim_outputs(tmp_path / "o", ["index.html"])


def test_a_read_only_folder_is_refused(tmp_path, monkeypatch):
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode: False if p == tmp_path else real_access(p, mode)
    )
    with pytest.raises(ValueError, match=rf"^{tmp_path}: cannot write there \(read-only\)"):
        claim_outputs(tmp_path / "new", ["index.html"])
    assert not (tmp_path / "new").exists()


def test_unclaimed_names_are_a_bug_not_an_input_error(tmp_path):
    out = claim_outputs(tmp_path, ["a.txt"])
    with pytest.raises(KeyError):
        out.write("b.txt", "x")
