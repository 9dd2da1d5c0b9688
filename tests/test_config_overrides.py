"""Config values are parsed by their field's type; anything else is a one-line error naming
the key, the expected type and the value."""
from __future__ import annotations

import subprocess

import pytest
import yaml

from tests.conftest import PYTHON, ROOT
from training.config import ConfigError, build_config, load_config


@pytest.mark.parametrize("override,message", [
    ("train.exclude_seen=flase", "train.exclude_seen: expected boolean (true, yes, 1, false, no, 0), got 'flase'"),
    ("model.tie_weights=maybe", "model.tie_weights: expected boolean (true, yes, 1, false, no, 0), got 'maybe'"),
    ("train.epochs=ten", "train.epochs: expected integer, got 'ten'"),
    ("train.epochs=2.5", "train.epochs: expected integer, got '2.5'"),
    ("train.lr=fast", "train.lr: expected number, got 'fast'"),
    ("model.attention_dropout=high", "model.attention_dropout: expected number or null, got 'high'"),
    ("train.threads=two", "train.threads: expected integer or null, got 'two'"),
    ("train.ks=[5,ten]", "train.ks: expected list of integer values, got '[5,ten]'"),
    ("train.ks=[5,10", "train.ks: expected list of integer values, got '[5,10'"),
    ("train.betas=[0.9]", "train.betas: expected list of 2 number values, got '[0.9]'"),
])
def test_an_override_that_is_not_its_fields_type_is_refused_by_name(override, message):
    with pytest.raises(ConfigError) as error:
        load_config(None, [override])
    assert str(error.value) == f"config: {message}"


@pytest.mark.parametrize("section,key,value", [
    ("train", "exclude_seen", "maybe"), ("train", "exclude_seen", 2), ("train", "epochs", True), ("train", "epochs", 3.0),
    ("train", "epochs", None), ("model", "architecture", 12), ("train", "lr", "1e-3x"), ("model", "exclude_features", [1]),
])
def test_a_config_file_value_of_the_wrong_type_is_refused(section, key, value):
    with pytest.raises(ConfigError, match=rf"^run.yaml: {section}\.{key}: expected .*, got {value!r}$".replace("[", r"\[")):
        build_config({section: {key: value}}, source="run.yaml")


def test_every_field_type_takes_its_values():
    config = load_config(None, [
        "train.exclude_seen=yes", "model.tie_weights=0", "model.input_norm=False", "train.epochs=+3", "train.lr=1e-3",
        "model.attention_dropout=null", "train.threads=2", "train.time_budget_minutes=1", "train.ks=[5, 10]",
        "train.betas=[0.8, 0.9]", "model.exclude_features=user_id_first", "model.pretrained_item_embeddings=2024.npy",
    ])
    assert (config.train.exclude_seen, config.model.tie_weights, config.model.input_norm) == (True, False, False)
    assert (config.train.epochs, config.train.lr, config.train.threads, config.train.time_budget_minutes) == (3, 0.001, 2, 1.0)
    assert config.model.attention_dropout is None and config.train.ks == (5, 10) and config.train.betas == (0.8, 0.9)
    assert config.model.exclude_features == ("user_id_first",) and config.model.pretrained_item_embeddings == "2024.npy"
    assert build_config({"train": {"exclude_seen": 1, "lr": 1, "ks": 10}}).train == load_config(
        None, ["train.exclude_seen=true", "train.lr=1.0", "train.ks=[10]"]).train


@pytest.mark.parametrize("override,message", [
    ("train.epochs=ten", "train: config: train.epochs: expected integer, got 'ten'"),
    ("train.exclude_seen=flase", "train: config: train.exclude_seen: expected boolean (true, yes, 1, false, no, 0), got 'flase'"),
])
def test_the_training_command_prints_one_line_and_fails(tmp_path, override, message):
    completed = subprocess.run([PYTHON, "-m", "training.train", "--data", str(tmp_path), "--out", str(tmp_path / "run"), override],
                               cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert completed.returncode != 0
    assert completed.stderr.strip() == message and completed.stdout == ""
    assert not (tmp_path / "run").exists()


def test_a_config_states_what_differs_from_its_base(tmp_path):
    """`base:` names a file whose sections the config's own keys override, key by key; a run
    directory then holds the whole resolved config. A missing or looping base is named."""
    from training.config import BASE, read_values, shipped_configs

    (tmp_path / "base.yaml").write_text("model:\n  d_model: 32\n  n_heads: 4\ntrain:\n  lr: 0.01\n")
    (tmp_path / "small.yaml").write_text("base: base.yaml\nmodel:\n  d_model: 16\n")
    config = load_config(tmp_path / "small.yaml", ["train.epochs=2"])
    assert (config.model.d_model, config.model.n_heads, config.train.lr, config.train.epochs) == (16, 4, 0.01, 2)
    (tmp_path / "orphan.yaml").write_text("base: gone.yaml\n")
    with pytest.raises(ConfigError, match=r"gone.yaml does not exist \(the base of .*orphan.yaml\)"):
        load_config(tmp_path / "orphan.yaml", [])
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="loop back"):
        load_config(tmp_path / "loop.yaml", [])
    # every shipped config is short: it names the base and states only values that differ from it
    base = read_values(BASE)
    for path in shipped_configs():
        own = yaml.safe_load(path.read_text())
        assert own.pop("base") == BASE.name, path
        same = [f"{section}.{key}" for section, values in own.items() for key, value in values.items()
                if base.get(section, {}).get(key, "absent") == value]
        assert same == [], f"{path.name} repeats the base's {same}"
