"""bench/gpu_check.sh and bench/gpu_check.py where no GPU is visible: one line, exit 0."""

import importlib.util
import os
import subprocess
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parents[2] / "bench"
NO_GPU = "gpu_check: no CUDA GPU is visible here; nothing to check (exit 0)\n"


def test_script_without_a_gpu_says_so_and_exits_0():
    env = os.environ | {"CUDA_VISIBLE_DEVICES": ""}  # a GPU machine too hides its GPUs
    done = subprocess.run(
        [str(BENCH / "gpu_check.sh")], env=env, capture_output=True, text=True, timeout=120
    )
    assert (done.returncode, done.stdout) == (0, NO_GPU), done.stderr


def test_module_imports_and_runs_without_cuda(monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("gpu_check", BENCH / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # importing touches no GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert module.main([]) == 0
    assert capsys.readouterr().out == NO_GPU
    assert module._table("T", ("a", "b", "c"), [("1", "2", "3")]) == (
        "### T\n\n| a | b | c |\n|---|---|---|\n| 1 | 2 | 3 |\n"
    )
