"""Packaging: what `pip install nettle` asks for, and a wheel that installs beside another torch.

Fast tests read `pyproject.toml`, the Makefile and `src/nettle` (parsed with `ast`): torch and
torchvision have lower bounds only, every third-party import of the package is a declared
dependency or an optional extra imported lazily with an error naming it, and the version has
one source. The slow test builds the sdist and wheel, installs the wheel into a fresh venv that
already holds another torch (2.13.0, the small CPU build from local disk) and runs the CLI.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

import nettle

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11")

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "nettle"

# import name -> distribution, for every runtime dependency
REQUIRED = {
    "torch": "torch",
    "torchvision": "torchvision",
    "numpy": "numpy",
    "PIL": "pillow",
    "pydantic": "pydantic",
    "yaml": "PyYAML",
    "rich": "rich",
    "matplotlib": "matplotlib",
    "adjustText": "adjustText",
    "sklearn": "scikit-learn",
}
# import name (or dotted module) -> (distribution, extra, text of the error that names it)
OPTIONAL = {
    "torch.utils.tensorboard": ("tensorboard", "tensorboard", "nettle[tensorboard]"),
    "ray": ("ray", "ray", "missing_extra('ray', 'ray')"),
    "submitit": ("submitit", "slurm", "missing_extra('submitit', 'slurm')"),
    "optuna": ("optuna", "search", "nettle[search]"),
    "boto3": ("boto3", "cloud", "nettle[cloud]"),
    "botocore": ("boto3", "cloud", "nettle[cloud]"),  # botocore comes with boto3
    "pandas": ("pandas", "dev", "pip install pandas"),  # only Store.to_dataframe
    "timm": ("timm", "dev", "pip install timm"),  # only `timm:NAME` model references
    "sqlalchemy": ("optuna", "search", "nettle[search]"),  # sqlalchemy comes with optuna
    "captum": ("captum", "attribution", "nettle[attribution]"),
    "onnxruntime": ("onnxruntime", "export", "nettle[export]"),
    "ipywidgets": ("ipywidgets", "notebooks", "nettle[notebooks]"),
}


def _project() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def _requirements(reqs: list[str]) -> dict[str, Requirement]:
    return {canonicalize_name(r.name): r for r in map(Requirement, reqs)}


# --- lower bounds only, exact builds in the Makefile ---------------------------------------


@pytest.mark.parametrize("name", ["torch", "torchvision"])
def test_torch_has_lower_bounds_only(name):
    req = _requirements(_project()["project"]["dependencies"])[name]
    operators = {spec.operator for spec in req.specifier}
    assert operators & {">=", ">"}, f"{req}: no lower bound"
    assert operators <= {">=", ">", "!="}, f"{req}: an upper bound or pin would replace torch"


def test_makefile_installs_through_the_constraints():
    pins = _requirements(
        line
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    deps = _requirements(_project()["project"]["dependencies"])
    for name in ("torch", "torchvision"):
        (spec,) = pins[name].specifier
        assert spec.operator == "=="
        assert Version(spec.version) in deps[name].specifier, f"{name}: pin below the bound"
    lines = [ln.strip() for ln in (ROOT / "Makefile").read_text().splitlines()]
    installs = [ln for ln in lines if "pip install" in ln and not ln.startswith("#")]
    assert installs == ["PIP := $(BIN)/pip install --quiet -c constraints.txt"]


# --- every import is declared -------------------------------------------------------------


@dataclass
class _Import:
    module: str  # full dotted name
    where: str  # file:line
    lazy: bool  # inside a function
    guard: str  # source of the `except ImportError` handlers around it ("" if none)


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    names = ast.unparse(handler.type) if handler.type is not None else "Exception"
    return bool(re.search(r"\b(ImportError|ModuleNotFoundError)\b", names))


def _imports(path: Path) -> list[_Import]:
    tree = ast.parse(path.read_text(), str(path))
    parent = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
        else:
            continue
        lazy, guards, typing_only, child = False, [], False, node
        while child in parent:
            up = parent[child]
            if isinstance(up, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lazy = True
            elif isinstance(up, ast.If) and "TYPE_CHECKING" in ast.unparse(up.test):
                typing_only = True
            elif isinstance(up, ast.Try) and child in up.body:
                handlers = [h for h in up.handlers if _catches_import_error(h)]
                guards += [ast.unparse(h) for h in handlers]
            child = up
        if typing_only:
            continue
        where = f"{path.relative_to(ROOT)}:{node.lineno}"
        found += [_Import(m, where, lazy, "\n".join(guards)) for m in modules]
    return found


def _third_party() -> list[_Import]:
    skip = set(sys.stdlib_module_names) | {"nettle"}
    found = [i for path in sorted(SRC.rglob("*.py")) for i in _imports(path)]
    return [i for i in found if i.module.split(".")[0] not in skip]


def _optional_key(module: str) -> str | None:
    for key in OPTIONAL:
        if module == key or module.startswith(key + "."):
            return key
    return None


def test_every_import_is_a_dependency_or_a_guarded_extra():
    imports = _third_party()
    required = {i.module.split(".")[0] for i in imports if _optional_key(i.module) is None}
    assert required == set(REQUIRED), "an import of src/nettle is missing from REQUIRED"
    deps = _requirements(_project()["project"]["dependencies"])
    assert set(deps) == {canonicalize_name(d) for d in REQUIRED.values()}


@pytest.mark.parametrize("key", list(OPTIONAL))
def test_an_optional_import_is_lazy_and_names_its_extra(key):
    dist, extra, hint = OPTIONAL[key]
    extras = _project()["project"]["optional-dependencies"]
    assert canonicalize_name(dist) in _requirements(extras[extra])
    (itself,) = [r for r in map(Requirement, extras["dev"]) if r.name == "nettle"]
    assert extra == "dev" or extra in itself.extras, "dev installs every extra"
    sites = [i for i in _third_party() if _optional_key(i.module) == key]
    assert sites, f"{key} is no longer imported: drop it from OPTIONAL"
    eager = [i.where for i in sites if not (i.lazy or i.guard)]
    assert not eager, f"{key} imported at module level without a guard: {eager}"
    assert any(hint in i.guard for i in sites), f"no error names {hint!r} at {sites}"


def test_missing_extra_names_the_pip_command():
    from nettle.experiment.backends.common import missing_extra

    assert "pip install 'nettle[slurm]'" in str(missing_extra("submitit", "slurm"))


def test_tensorboard_missing_is_a_one_line_config_error(tmp_path, monkeypatch):
    from nettle.config import ConfigError
    from nettle.train.metrics import MetricsWriter

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with pytest.raises(ConfigError, match=r"pip install 'nettle\[tensorboard\]'"):
        MetricsWriter(tmp_path, tensorboard=True).open(0)
    MetricsWriter(tmp_path, tensorboard=False).open(0)  # not asked for: nothing to import


# --- metadata -----------------------------------------------------------------------------


def test_one_version_source():
    project = _project()
    assert "version" not in project["project"]
    assert project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "nettle.__version__"}
    assert importlib.metadata.version("nettle") == nettle.__version__
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["version"] == nettle.__version__
    assert f"## [{nettle.__version__}]" in (ROOT / "CHANGELOG.md").read_text()


def test_license_is_an_spdx_expression_the_backend_reads():
    project = _project()
    assert project["project"]["license"] == "MIT"
    assert project["project"]["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "The nettle authors" in text
    assert not [c for c in project["project"]["classifiers"] if c.startswith("License ::")]
    (backend,) = project["build-system"]["requires"]
    setuptools = Requirement(backend).specifier
    assert Version("77.0.3") in setuptools and Version("76.1.0") not in setuptools
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["license"] == "MIT"


# --- the wheel beside another torch -------------------------------------------------------

OTHER_TORCH = ("torch==2.13.0", "torchvision==0.28.0")  # torchvision 0.29.1 needs torch 2.14


def _run(cmd: list[str | Path], timeout: float, **kw) -> str:
    drop = ("PYTHONPATH", "PIP_CONSTRAINT", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    done = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, env=env, **kw
    )
    assert done.returncode == 0, f"{cmd}: exit {done.returncode}\n{done.stderr[-3000:]}"
    return done.stdout


def _venv(path: Path) -> Path:
    _run([sys.executable, "-m", "venv", path], 120)
    return path / "bin"


def _build(tmp: Path) -> Path:
    """The wheel, built (through the sdist) from a copy of the sources by `python -m build`."""
    src = tmp / "src-copy"  # the working tree gets no build/ or egg-info
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(ROOT / "src", src / "src", ignore=ignore)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    bin_ = _venv(tmp / "build-venv")
    _run([bin_ / "pip", "install", "--quiet", "build"], 180)
    _run([bin_ / "python", "-m", "build", "--outdir", tmp / "dist", src], 300)
    (wheel,) = (tmp / "dist").glob("nettle-*.whl")
    return wheel


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_wheel_installs_beside_another_torch_and_counts(tmp_path):
    from nettle.measure import count
    from nettle.models import create_model

    expected = count(create_model("wrn-16-4"), (3, 32, 32)).params
    wheel = _build(tmp_path)
    pins = tmp_path / "other-torch.txt"
    pins.write_text("\n".join(OTHER_TORCH) + "\n")
    bin_ = _venv(tmp_path / "venv")
    pip = [bin_ / "pip", "install", "--quiet", "-c", pins]
    # never download a torch build: go on only if the resolver takes torch from local disk
    plan = json.loads(_run([*pip, "--dry-run", "--report", "-", *OTHER_TORCH], 300))
    (torch_item,) = [p for p in plan["install"] if p["metadata"]["name"] == "torch"]
    if not torch_item["download_info"]["url"].startswith("file:"):
        pytest.skip("torch 2.13.0 is not on local disk; this test never downloads a torch build")
    _run([*pip, *OTHER_TORCH], 300)
    _run([*pip, wheel], 400)  # the constraints turn "would replace torch" into a failure

    shown = _run([bin_ / "pip", "show", "torch"], 60)
    assert re.search(r"^Version: 2\.13\.0(\+\w+)?$", shown, re.M), shown
    no_tb = "import importlib.util as u, sys; sys.exit(u.find_spec('tensorboard') is not None)"
    _run([bin_ / "python", "-c", no_tb], 60)  # an extra, not a dependency
    version = _run([bin_ / "nettle", "--version"], 120, cwd=tmp_path)
    assert version.strip() == f"nettle {nettle.__version__}"
    out = _run([bin_ / "nettle", "count", "wrn-16-4", "--input", "3x32x32", "--json"], 300)
    assert json.loads(out)["params"] == expected
