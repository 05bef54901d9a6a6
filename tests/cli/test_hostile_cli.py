"""Bad options of count, inspect and lr-find: one line naming the option, exit 2, no change."""

import os

import pytest
import yaml

from nettle.cli import main
from nettle.config import load_config_dict
from nettle.errors import ExitCode
from nettle.experiment.run import run_experiment
from nettle.files import OUTPUTS_MANIFEST

pytestmark = pytest.mark.usefixtures("one_thread")


def _snapshot(folder):
    return {
        p.relative_to(folder): p.read_bytes() if p.is_file() else None for p in folder.rglob("*")
    }


def _refused(argv, capsys, folder):
    """Run the CLI; assert exit 2, one line on stderr, no traceback, `folder` unchanged."""
    before = _snapshot(folder)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == ExitCode.BAD_INPUT, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"nettle {argv[0]}: error: "), err
    assert _snapshot(folder) == before
    return lines[0].split(": error: ", 1)[1]


# --- count ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["resnet18", "--input", "3x32"], "--input 3x32: resnet18 takes CxHxW (3 sizes), got 2"),
        (
            ["resnet18", "--input", "3x8x8x8"],
            "--input 3x8x8x8: resnet18 takes CxHxW (3 sizes), got 4",
        ),
        (
            ["resnet18", "--input", "3x2x2"],
            "--input 3x2x2: smaller than the 7x7 kernel of resnet18's first convolution; give at "
            "least 3x7x7",
        ),
        (
            ["vgg11", "--input", "3x8x8"],
            "--input 3x8x8: vgg11 cannot run it (Given input size: (512x1x1). Calculated output "
            "size: (512x0x0). Output size is too small)",
        ),
        (
            ["resnet18", "--input", "3x100000x100000"],
            "--input 3x100000x100000: the input alone takes 111.8 GiB as float32, more than the "
            "2 GiB counted here; give a smaller input",
        ),
        (["resnet18", "--conv", "Generic", "--budget", "nan"], "--budget nan: expected a finite"),
        (["resnet18", "--conv", "Generic", "--budget", "inf"], "--budget inf: expected a finite"),
        (["resnet18", "--conv", "Generic", "--budget", "-1"], "--budget -1.0: expected a finite"),
        (["resnet18", "--conv", "Generic", "--budget-macs", "0"], "--budget-macs 0.0: expected"),
        (["resnet18", "--num-classes", "0"], "--num-classes 0: expected 1 to 10,000,000"),
        (["resnet18", "--depth", "-1"], "--depth -1: expected 0 or more name parts"),
    ],
)
def test_count_refuses_bad_inputs(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    assert _refused(["count", *argv], capsys, tmp_path).startswith(message)


def test_count_still_counts_small_valid_inputs(capsys):
    assert main(["count", "simple-cnn", "--input", "1x3x3", "--json"]) == 0
    assert '"input_shape": [1, 3, 3]' in capsys.readouterr().out


# --- inspect ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tree = {
        "name": "t",
        "model": {"name": "simple-cnn", "kwargs": {"width": 4}},
        "train": {"epochs": 1, "device": "cpu", "tensorboard": False},
    }
    run = tmp_path_factory.mktemp("hostile") / "run"
    run_experiment(load_config_dict(tree), run)
    return run


def _inspect(run_dir, out, *extra):
    return [
        "inspect",
        str(run_dir),
        "-o",
        str(out),
        "--channel",
        "1",
        "--max-examples",
        "40",
        *extra,
    ]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--max-examples", "0"], "--max-examples 0: expected a whole number of at least 1"),
        (["--max-examples", "-5"], "--max-examples -5: expected a whole number of at least 1"),
        (["--top", "0"], "--top 0: expected a whole number of at least 1"),
        (["--steps", "-1"], "--steps -1: expected a whole number of at least 1"),
        (["--channel", "-2"], "--channel -2: expected a channel number of at least 0"),
    ],
)
def test_inspect_refuses_bad_counts(run_dir, tmp_path, capsys, extra, message):
    assert _refused(_inspect(run_dir, tmp_path / "out", *extra), capsys, tmp_path) == message


def test_inspect_never_replaces_a_page_it_did_not_write(run_dir, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "index.html").write_text("<h1>my notes</h1>")
    assert _refused(_inspect(run_dir, out), capsys, tmp_path) == (
        f"{out / 'index.html'}: exists and was not written by nettle; move it away or choose "
        "another output folder (-o)"
    )
    (out / "index.html").unlink()
    (out / "top_patches_c1.png").write_bytes(b"my picture")  # found once the channels are known
    assert _refused(_inspect(run_dir, out), capsys, tmp_path).startswith(
        f"{out / 'top_patches_c1.png'}: exists and was not written by nettle"
    )
    assert sorted(p.name for p in out.iterdir()) == ["top_patches_c1.png"]


def test_inspect_replaces_its_own_pages_but_not_edited_ones(run_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(_inspect(run_dir, out)) == 0
    assert (out / OUTPUTS_MANIFEST).is_file() and (out / "index.html").is_file()
    assert main(_inspect(run_dir, out)) == 0  # a rerun replaces nettle's own files
    capsys.readouterr()
    with (out / "index.md").open("a") as f:
        f.write("\nmy conclusions\n")
    assert _refused(_inspect(run_dir, out), capsys, tmp_path).startswith(
        f"{out / 'index.md'}: exists and was not written by nettle"
    )


def test_inspect_output_that_is_a_file_or_read_only(run_dir, tmp_path, capsys, monkeypatch):
    afile = tmp_path / "report.html"
    afile.write_text("mine")
    assert _refused(_inspect(run_dir, afile), capsys, tmp_path) == (
        f"{afile}: is a file, not a folder; choose another output folder (-o)"
    )
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, m: p != locked and real_access(p, m))
    assert _refused(_inspect(run_dir, locked / "out"), capsys, tmp_path) == (
        f"{locked}: cannot write there (read-only); choose another output folder (-o)"
    )


# --- lr-find ----------------------------------------------------------------------------------


def _config(tmp_path, **sections):
    tree = {"model": {"name": "simple-cnn", "kwargs": {"width": 4}}, "train": {"device": "cpu"}}
    tree.update(sections)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tree))
    return str(path)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--start-lr", "nan"], "--start-lr nan: expected a finite learning rate above 0"),
        (["--start-lr", "-1"], "--start-lr -1.0: expected a finite learning rate above 0"),
        (["--end-lr", "inf"], "--end-lr inf: expected a finite learning rate above 0"),
        (["--start-lr", "1", "--end-lr", "0.1"], "--start-lr 1.0 is not below --end-lr 0.1"),
        (["--iters", "0"], "--iters 0: expected at least 3 steps"),
    ],
)
def test_lr_find_refuses_bad_options(tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    line = _refused(["lr-find", _config(tmp_path), *extra], capsys, tmp_path)
    assert line.startswith(message)


def test_lr_find_refuses_configs_it_cannot_run(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    big = _config(tmp_path, data={"batch_size": 5000})
    assert _refused(["lr-find", big], capsys, tmp_path) == (
        f"{big}: data.batch_size 5000 is more than the 1437 training examples of digits; "
        "lr-find needs whole batches"
    )
    ctc = _config(tmp_path, train={"loss": "ctc"})  # the run's objective, on one class each
    assert _refused(["lr-find", ctc], capsys, tmp_path) == (
        "CTC labels must be (N, 1 + max_length), got shape (64,)"
    )


def test_lr_find_writes_only_into_what_it_owns(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = _config(tmp_path, data={"batch_size": 32})
    out = tmp_path / "out"
    out.mkdir()
    (out / "lr_find.json").write_text('{"mine": true}')
    assert _refused(["lr-find", config, "-o", str(out)], capsys, tmp_path).startswith(
        f"{out / 'lr_find.json'}: exists and was not written by nettle"
    )
    (out / "lr_find.json").unlink()
    assert main(["lr-find", config, "-o", str(out), "--iters", "5", "--json"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        OUTPUTS_MANIFEST,
        "lr_find.json",
        "lr_find.png",
    ]
    assert "NaN" not in (out / "lr_find.json").read_text()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["count", "vgg11", "--input", "3x8x8"], "--input 3x8x8: vgg11 cannot run it"),
        (["count", "resnet18", "--input", "3x100000x100000"], "--input 3x100000x100000: the input"),
        (["lr-find", "c.yaml", "--start-lr", "nan"], "--start-lr nan: expected a finite"),
    ],
)
def test_a_real_process_prints_one_line_and_no_warning(tmp_path, argv, message):
    import subprocess
    import sys

    (tmp_path / "c.yaml").write_text("train: {device: cpu}\n")
    before = _snapshot(tmp_path)
    code = "import sys; from nettle.cli import main; sys.exit(main())"
    proc = subprocess.run(
        [sys.executable, "-c", code, *argv],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == ExitCode.BAD_INPUT
    assert proc.stderr.splitlines() == [
        f"nettle {argv[0]}: error: " + proc.stderr.split(": error: ")[1].strip()
    ]
    assert message in proc.stderr
    assert _snapshot(tmp_path) == before
