"""The config: strict loading, clear errors naming the key."""

from __future__ import annotations

import pytest
import yaml

from geogan.config import ConfigError, check_attribute, config_from_dict, config_to_dict, flatten, load_config
from tests.helpers.params import ROOT, tiny_config, tiny_params_dict


def test_repo_params_load():
    cfg = load_config(ROOT / "params.yaml")
    assert cfg.attributes == ("Mustache", "Eyeglasses")
    assert cfg.loss.lambda_rec == 5.0
    for variant in sorted((ROOT / "params").glob("*.yaml")):
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
    cfg = tiny_config()
    assert check_attribute(cfg, "Mustache") == "Mustache"
    with pytest.raises(ConfigError, match="did you mean 'Mustache'"):
        check_attribute(cfg, "Mustach")


def test_step_weights_are_the_params_loss_weights():
    d = tiny_params_dict()
    d["loss"].update(lambda_tv=3.0, lambda_mask=0.25)
    weights = config_from_dict(d).loss.step_weights()
    assert weights["lambda_tv"] == 3.0 and weights["lambda_mask"] == 0.25
    assert set(weights) == {"lambda_adv", "lambda_cls", "lambda_rec", "lambda_landmark", "lambda_tv", "lambda_mask",
                            "lambda_local_adv", "lambda_local_cls", "lambda_mask_region"}


@pytest.mark.parametrize("key,value,message", [
    ("train.steps", 0, "'train.steps' must be > 0, got 0"),
    ("train.batch_size", -4, "'train.batch_size' must be > 0, got -4"),
    ("train.checkpoint_every", 0, "'train.checkpoint_every' must be > 0"),
    ("train.log_every", 0, "'train.log_every' must be > 0"),
    ("data.resolution", -64, "'data.resolution' must be > 0"),
    ("split.test_fraction", 1.5, r"'split.test_fraction' must be in \[0, 1\], got 1.5"),
    ("promote.min_transfer_success", -0.1, r"'promote.min_transfer_success' must be in \[0, 1\]"),
    ("train.beta2", 1.0, r"'train.beta2' must be in \[0, 1\), got 1.0"),
    ("loss.lambda_tv", -1.0, "'loss.lambda_tv' must be >= 0"),
    ("evaluate.references", 0, "'evaluate.references' must be > 0, got 0"),
    ("promote.min_identity_kept", 1.2, r"'promote.min_identity_kept' must be in \[0, 1\], got 1.2"),
    ("promote.max_kid_vs_copy_paste", 0.0, "'promote.max_kid_vs_copy_paste' must be > 0"),
    ("judge.patience", 0, "'judge.patience' must be > 0"),
])
def test_out_of_range_named(tmp_path, key, value, message):
    with pytest.raises(ConfigError, match=message):
        load_config(_write(tmp_path, tiny_params_dict(**{key: value})))


def test_every_numeric_key_has_a_range():
    """A new numeric key must say what values it allows (geogan/config_ranges.py), or the loader cannot refuse them."""
    from geogan.config_ranges import RANGES

    cfg = load_config(ROOT / "params.yaml")
    numeric = {k for k, v in flatten(cfg).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    assert numeric - RANGES.keys() == set(), "numeric keys without a range"
    assert RANGES.keys() - numeric == set(), "ranges of keys the config does not have"


def test_scientific_notation_is_a_number_and_a_quoted_one_gets_a_hint(tmp_path):
    text = (ROOT / "params.yaml").read_text()
    assert "lr_g: 1.0e-4" in text
    p = tmp_path / "params.yaml"
    p.write_text(text.replace("lr_g: 1.0e-4", "lr_g: 1e-4").replace("lr_d: 1.0e-4", "lr_d: 2E-4"))
    cfg = load_config(p)
    assert (cfg.train.lr_g, cfg.train.lr_d) == (1e-4, 2e-4)
    p.write_text(text.replace("lr_g: 1.0e-4", "lr_g: '1e-4'"))
    with pytest.raises(ConfigError, match=r"'train.lr_g' must be a number, got the string '1e-4' \(write it unquoted"):
        load_config(p)


def test_a_bare_off_is_the_mode_off_as_dvc_exp_run_writes_it(tmp_path):
    """`dvc exp run -S` rewrites params.yaml as YAML 1.2 and drops the quotes; YAML 1.1 then reads `off` as false."""
    text = (ROOT / "params.yaml").read_text()
    p = tmp_path / "params.yaml"
    p.write_text(text.replace("  fid: auto ", "  fid: off ").replace("  identity: auto ", "  identity: off "))
    cfg = load_config(p)
    assert (cfg.evaluate.fid, cfg.evaluate.identity) == ("off", "off")
    p.write_text(text.replace("  fid: auto ", "  fid: on "))  # true means no mode
    with pytest.raises(ConfigError, match=r"'evaluate.fid' must be one of \['auto', 'require', 'off'\], got True"):
        load_config(p)


def test_params_yaml_is_the_one_source_of_defaults():
    """No section has defaults of its own, so no second set can disagree with params.yaml."""
    import dataclasses

    from geogan import config as config_module

    sections = [c for c in vars(config_module).values() if isinstance(c, type) and dataclasses.is_dataclass(c)]
    assert len(sections) >= 12
    with_default = [f"{c.__name__}.{f.name}" for c in sections for f in dataclasses.fields(c)
                    if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING]
    assert with_default == []


def test_variant_files_state_only_what_differs():
    """Each recipe in params/ extends params.yaml and repeats none of its values."""
    import yaml

    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    for variant in sorted((ROOT / "params").glob("*.yaml")):
        raw = yaml.safe_load(variant.read_text())
        assert raw.pop("extends") == "../params.yaml", variant
        repeated = [f"{k}.{kk}" for k, v in raw.items() if isinstance(v, dict) and k != "regions"
                    for kk, vv in v.items() if base[k].get(kk) == vv]
        repeated += [k for k, v in raw.items() if not isinstance(v, dict) and base.get(k) == v]
        assert repeated == [], f"{variant.name} repeats params.yaml: {repeated}"


def test_extends_merges_sections_and_replaces_data(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(yaml_dump(tiny_params_dict()))
    variant = tmp_path / "v" / "variant.yaml"
    variant.parent.mkdir()
    variant.write_text("extends: ../base.yaml\ntrain:\n  steps: 7\nregions:\n"
                       "  Mustache: {points: [48, 54], margin: [0.1, 0.1], crop: [0.25, 0.5]}\n"
                       "  Eyeglasses: {points: [36, 45], margin: [0.2, 0.2], crop: [0.25, 0.5]}\n")
    cfg, ref = load_config(variant), load_config(base)
    assert cfg.train.steps == 7 and cfg.train.batch_size == ref.train.batch_size  # a section merges key by key
    assert cfg.regions["Mustache"].points == (48, 54)  # a data mapping is replaced whole
    assert cfg.model == ref.model
    variant.write_text("extends: ../base.yaml\ntrain:\n  stepz: 7\n")
    with pytest.raises(ConfigError, match=r"variant.yaml: unknown key 'train.stepz'; did you mean 'train.steps'"):
        load_config(variant)
    variant.write_text("extends: ../nowhere.yaml\n")
    with pytest.raises(ConfigError, match=r"variant.yaml: 'extends: ../nowhere.yaml': .* not found"):
        load_config(variant)
    variant.write_text("extends: variant.yaml\n")
    with pytest.raises(ConfigError, match="comes back to a file it extends"):
        load_config(variant)


def test_params_stage_writes_every_key(tmp_path):
    """`python -m geogan.stages.params` resolves a variant into a complete file (what DVC needs as params.yaml)."""
    from geogan.stages import params as params_stage

    out = tmp_path / "params.yaml"
    params_stage.run(ROOT / "params" / "celeba-128.yaml", out)
    full = load_config(out)
    assert config_to_dict(full) == config_to_dict(load_config(ROOT / "params" / "celeba-128.yaml"))
    assert "extends" not in out.read_text()


def yaml_dump(d: dict) -> str:
    import yaml

    return yaml.safe_dump(d, sort_keys=False)
