import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from nettle.config import (
    ConfigError,
    ExperimentConfig,
    apply_overrides,
    config_hash,
    dump_config,
    load_config,
    load_config_dict,
)

keys = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12)


@settings(max_examples=50, deadline=None)
@given(epochs=st.integers(0, 10_000), seed=st.integers(0, 2**32 - 1), lr=st.floats(1e-8, 10.0))
def test_valid_overrides_round_trip(epochs, seed, lr):
    cfg = load_config_dict(
        {}, [f"train.epochs={epochs}", f"train.seed={seed}", f"train.optim.lr={lr!r}"]
    )
    assert (cfg.train.epochs, cfg.train.seed, cfg.train.optim.lr) == (epochs, seed, lr)
    again = load_config_dict(yaml.safe_load(dump_config(cfg)))
    assert again == cfg and config_hash(again) == config_hash(cfg)


@settings(max_examples=50, deadline=None)
@given(section=st.sampled_from(["model", "data", "train", "train.optim"]), key=keys)
def test_unknown_keys_are_refused_by_name(section, key):
    known = {
        "model": ExperimentConfig.model_fields["model"].annotation.model_fields,
        "data": ExperimentConfig.model_fields["data"].annotation.model_fields,
        "train": ExperimentConfig.model_fields["train"].annotation.model_fields,
        "train.optim": {"name", "lr", "momentum", "nesterov", "weight_decay", "betas"},
    }[section]
    if key in known:
        return
    with pytest.raises(ConfigError, match=f"{section}.{key}: unknown key"):
        load_config_dict({}, [f"{section}.{key}=1"], source="x.yaml")


not_a_number = st.one_of(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz", max_size=8).map(lambda s: "x" + s),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(keys, st.integers(), max_size=2),
)


@settings(max_examples=80, deadline=None)
@given(
    key=st.sampled_from(["train.epochs", "train.seed", "train.optim.lr", "data.batch_size"]),
    value=not_a_number,
)
def test_wrong_types_name_the_field(key, value):
    section, _, leaf = key.rpartition(".")
    tree: dict = {}
    node = tree
    for part in section.split("."):
        node = node.setdefault(part, {})
    node[leaf] = value
    with pytest.raises(ConfigError, match=rf"^cfg.yaml: {key}: "):
        load_config_dict(tree, source="cfg.yaml")
    # the same value from the command line names the same key
    with pytest.raises(ConfigError, match=rf"^cfg.yaml: {key}: "):
        load_config_dict(
            {},
            [f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}"],
            source="cfg.yaml",
        )


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)
    top = tmp_path / "list.yaml"
    top.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(top)


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_overrides({}, ["train.epochs"])
    with pytest.raises(ConfigError, match="train.epochs is not a section"):
        apply_overrides({"train": {"epochs": 3}}, ["train.epochs.x=1"])
    with pytest.raises(ConfigError, match="name must be a plain folder name"):
        load_config_dict({"name": "../escape"})


def test_yaml_is_loaded_safely(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(evil)
