"""The ablation table of a report: one column per setting that differs between the runs.

A sweep such as `examples/newlogic-grid.yaml` varies a few keys (unit x loss x init); the
table has those keys as columns (dotted names, as in a sweep file), then parameters and test
accuracy, one row per run. Settings all runs share are left out; so are `name` and the
execution settings (`nettle.config.EXECUTION_KEYS`), which do not change the numbers.
Values are written compactly (a list of rules as flow YAML, without its unset fields).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from nettle.config import EXECUTION_KEYS
from nettle.experiment.report_page import Section

__all__ = ["ablation_section", "flatten_config", "varying_keys"]


def flatten_config(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as `{dotted.key: value}`; lists and empty mappings stay values."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            flat |= flatten_config(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _ignored(key: str) -> bool:
    return key == "name" or any(key == k or key.startswith(k + ".") for k in EXECUTION_KEYS)


def varying_keys(configs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The dotted keys whose values are not the same in every config (in first-seen order)."""
    flats = [flatten_config(c) for c in configs]
    keys = list(dict.fromkeys(k for f in flats for k in f))
    missing = object()
    return [
        k for k in keys if not _ignored(k) and len({repr(f.get(k, missing)) for f in flats}) > 1
    ]


def _drop_unset(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _drop_unset(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_unset(v) for v in value]
    return value


def _compact(value: Any) -> str:
    if isinstance(value, str):
        return value or '""'
    text = yaml.safe_dump(_drop_unset(value), default_flow_style=True, width=10**6)
    return text.strip().removesuffix("...").strip()


def ablation_section(records: Sequence[Mapping[str, Any]]) -> Section | None:
    """The "Ablation" section of report records (each with a `config`), or None when fewer
    than two runs or no setting differs."""
    configs = [r.get("config") or {} for r in records]
    keys = varying_keys(configs) if len(records) > 1 else []
    if not keys:
        return None
    rows = []
    for r, cfg in zip(records, configs):
        flat = flatten_config(cfg)
        params, acc = r.get("params"), r.get("test_acc")
        rows.append(
            [_compact(flat.get(k)) for k in keys]
            + ["" if params is None else f"{int(params):,}"]
            + ["" if acc is None else f"{100 * float(acc):.2f}"]
        )
    return Section(
        "Ablation",
        text=["One row per run; the columns are the settings that differ between the runs."],
        table=([*keys, "params", "test acc (%)"], rows),
    )
