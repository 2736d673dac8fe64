"""The config: strict loading, clear errors naming the key."""

from __future__ import annotations

import pytest
import yaml

from geogan.config import Config, ConfigError, check_attribute, config_from_dict, config_to_dict, flatten, load_config
from tests.conftest import ROOT, tiny_params_dict


def test_repo_params_load():
    cfg = load_config(ROOT / "params.yaml")
    assert cfg.attributes == ("Mustache", "Eyeglasses")
    assert cfg.loss.lambda_rec == 5.0
    for variant in sorted((ROOT / "params").glob("*.yaml")) + [ROOT / "benchmarks" / "params-synthetic128-gpu.yaml"]:
        load_config(variant)  # every recipe file follows the schema
    celeba = load_config(ROOT / "params" / "celeba-128.yaml")
    assert celeba.evaluate.sources * celeba.evaluate.references >= 1000 and celeba.evaluate.populations == {"Mustache": "Male & (No_Beard | Mustache)"}


def test_round_trip():
    cfg = load_config(ROOT / "params.yaml")
    assert config_from_dict(config_to_dict(cfg)) == cfg
    assert flatten(cfg)["train.steps"] == cfg.train.steps


def _write(tmp_path, params):
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(params))
    return p


def test_unknown_key_named_with_suggestion(tmp_path):
    params = tiny_params_dict()
    params["train"]["stepz"] = 3
    with pytest.raises(ConfigError, match=r"unknown key 'train.stepz'.*did you mean 'train.steps'"):
        load_config(_write(tmp_path, params))


def test_missing_key_named(tmp_path):
    params = tiny_params_dict()
    del params["loss"]["lambda_tv"]
    with pytest.raises(ConfigError, match=r"missing key 'loss.lambda_tv'"):
        load_config(_write(tmp_path, params))


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("train.steps", "ten", "'train.steps' must be an integer"),
        ("train.steps", 1.5, "'train.steps' must be an integer"),
        ("train.lr_g", True, "'train.lr_g' must be a number"),
        ("train.precision", "fp16", "'train.precision' must be one of"),
        ("split.use_source_partition", "yes", "must be true or false"),
        ("attributes", "Mustache", "'attributes' must be a list"),
    ],
)
def test_wrong_type_named(tmp_path, key, value, message):
    params = tiny_params_dict(**{key: value})
    with pytest.raises(ConfigError, match=message):
        load_config(_write(tmp_path, params))


def test_overrides_and_missing_file(tmp_path):
    cfg = load_config(ROOT / "params.yaml", overrides={"train.steps": 7})
    assert cfg.train.steps == 7
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_check_attribute():
    cfg = Config()
    assert check_attribute(cfg, "Mustache") == "Mustache"
    with pytest.raises(ConfigError, match="did you mean 'Mustache'"):
        check_attribute(cfg, "Mustach")


def test_step_weights_are_the_params_loss_weights():
    d = tiny_params_dict()
    d["loss"].update(lambda_tv=3.0, lambda_mask=0.25)
    weights = config_from_dict(d).loss.step_weights()
    assert weights["lambda_tv"] == 3.0 and weights["lambda_mask"] == 0.25
    assert set(weights) == {"lambda_adv", "lambda_cls", "lambda_rec", "lambda_landmark", "lambda_tv", "lambda_mask"}
