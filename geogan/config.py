"""One typed, frozen config mirroring params.yaml, loaded and validated in one place.

Every section of params.yaml maps to a frozen dataclass below, without defaults: params.yaml is
the one source of them. A variant file names its base (`extends: ../params.yaml`) and states
only what differs. Loading is strict: an unknown key, a missing key or a value of the wrong
type is a `ConfigError` naming the key (with a suggestion for a typo).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml


class ConfigError(ValueError):
    """A params file that does not match the config schema."""


class _ParamsLoader(yaml.SafeLoader):
    """PyYAML's YAML 1.1 rules read `1e-4` (no dot) as a string; YAML 1.2, DVC and a reader see a number."""


_ParamsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"), list("-+0123456789."))


@dataclass(frozen=True)
class DataConfig:
    """Where faces come from and how they are prepared (the `ingest` stage)."""

    source: str  # "synthetic", a folder (CelebA format or images + CSV), or s3://bucket/prefix
    format: Literal["auto", "synthetic", "celeba", "csv"]
    resolution: int  # prepared images are square, this many pixels
    synthetic_identities: int  # synthetic source: number of distinct people
    synthetic_images_per_identity: int  # ... and images of each (pose/expression vary)
    csv_file: str  # csv source: attribute table inside the folder
    image_column: str  # csv source: column holding the file name
    identity_column: str  # csv source: column holding the person id ("" = unknown)
    min_image_size: int  # smaller source images are skipped and counted
    workers: int  # parallel decode processes
    license_ack: bool  # real CelebA/CelebA-HQ: non-commercial research only


@dataclass(frozen=True)
class LandmarksConfig:
    """68-point landmark extraction (the `landmarks` stage)."""

    backend: Literal["exact", "dlib", "fan", "precomputed"]
    device: str  # "auto" picks cuda when available
    batch_size: int
    fan_weights: str  # local 2DFAN4 checkpoint; "" = torch hub cache
    precomputed_file: str  # precomputed backend: .npy (N, 68, 2) or CSV aligned with the manifest


@dataclass(frozen=True)
class SplitConfig:
    """Unpaired A (without) / B (with) splits per attribute (the `split` stage)."""

    test_fraction: float
    val_fraction: float  # held-out identities for choosing checkpoints and thresholds (no source partition)
    max_per_domain: int  # cap on A and on B per partition; 0 = no cap
    use_source_partition: bool  # use the source's train/val/test partition when it has one
    populations: dict[str, str]  # attribute -> who may enter A and B, e.g. "Male"
    match: dict[str, tuple[str, ...]]  # attribute -> columns A is matched to B on


@dataclass(frozen=True)
class ModelConfig:
    """Network sizes; the reference uses ngf 16, ndf 64, 3 ResNet blocks, 3 D scales."""

    ngf: int
    ndf: int
    n_blocks: int
    n_scales: int
    flow_inputs: Literal["rgb", "rgb+landmarks"]
    flow_scale: float  # flow head output is multiplied by this (reference: / 10)
    local_ndf: int  # channels of the local attribute discriminator on the region crop (0 = none)


@dataclass(frozen=True)
class LossConfig:
    """Loss weights; names match the logged metrics (`loss/g/<name>`)."""

    lambda_adv: float
    lambda_cls: float
    lambda_rec: float
    lambda_landmark: float
    lambda_tv: float
    lambda_mask: float
    refine_weight: float  # w in residual = 2 tanh(r) w m
    refine_start_step: int  # refinement is off before this step (reference: 10 epochs)
    mask_warmup_steps: int  # lambda_mask ramps linearly from 0 over these steps (0 = full from the start)
    lambda_local_adv: float  # the local attribute discriminator's LSGAN term (with model.local_ndf > 0)
    lambda_local_cls: float  # ... and its has-attribute term
    lambda_mask_region: float  # mask mass outside the attribute's landmark region

    def step_weights(self) -> dict[str, float]:
        """The weights the training step reads (`StepContext.weights`), keyed by their params names."""
        names = ("lambda_adv", "lambda_cls", "lambda_rec", "lambda_landmark", "lambda_tv", "lambda_mask",
                 "lambda_local_adv", "lambda_local_cls", "lambda_mask_region")
        return {name: getattr(self, name) for name in names}


@dataclass(frozen=True)
class TrainConfig:
    """The training loop (the `train` stage)."""

    steps: int
    batch_size: int  # global batch of (a, b) pairs, split across ranks
    lr_g: float
    lr_d: float
    beta1: float
    beta2: float
    lr_decay_every: int  # steps between decays; 0 = constant
    lr_decay_g: float
    lr_decay_d: float
    augment_flip: bool  # horizontal flip, applied to landmarks too
    # DiffAugment on everything D sees (reals and fakes, both updates): for small real sets
    d_augment: tuple[Literal["color", "translation", "cutout"], ...]
    cutout_spares_region: bool  # cutout never covers the attribute's region (a label it would erase)
    ema_decay: float  # exponential moving average of G for evaluation and export (0 = none)
    device: str
    precision: Literal["auto", "fp32", "bf16"]  # auto = bf16 autocast on cuda
    channels_last: bool  # only takes effect on cuda
    cudnn_benchmark: bool  # on cuda: cuDNN times each conv's algorithms at its first call and keeps the fastest
    compile: bool
    compile_cuda_graphs: bool  # with compile, on CUDA: replay G's and D's compiled graphs as CUDA graphs
    compile_losses: bool  # with compile: each phase's D input (DiffAugment, region crops), D and loss terms as one graph
    compile_cache: bool  # with compile: Inductor's and Triton's caches in <run>/compile_cache (warm restarts)
    grad_sync: Literal["ddp", "flat"]  # several ranks: DDP wrappers, or one flat all-reduce per net after backward
    checkpoint_every: int
    log_every: int
    image_every: int
    seed: int
    init_from: str  # a generator.pt to start G from (e.g. pretrained on synthetic faces); "" = random


@dataclass(frozen=True)
class EvaluateConfig:
    """Evaluation of a generator and the baselines on the fixed evaluation set (the `evalset` and `evaluate` stages)."""

    sources: int  # per attribute: test faces without it (one per person where possible) ...
    references: int  # ... each paired with every one of these test faces with it (other people)
    populations: dict[str, str]  # attribute -> who may be drawn, e.g. "Male"
    bootstrap: int  # resamples of sources and references behind every 95% interval
    batch_size: int
    fid: Literal["auto", "require", "off"]  # require = fail without the Inception weights
    inception_weights: str  # pt_inception-2015-12-05-6726825d.pth or fid-helper's default_1.pt; "" = search
    kid_subsets: int  # KID's random subsets (its std is over these)
    identity: Literal["auto", "require", "off"]  # dlib face-embedding distance; auto = real faces, when dlib is installed
    copy_paste_feather: float  # the copy-paste baseline's mask fades over this many inter-ocular distances
    device: str


@dataclass(frozen=True)
class JudgeConfig:
    """The attribute classifier that judges transfers (the `train_judge` stage), trained once per data version."""

    width: int  # channels of the first stage (x2 per stage)
    max_steps: int  # an upper bound: early stopping on val ends it sooner
    eval_every: int  # steps between checks on val
    patience: int  # checks on val without a better mean AUC before stopping
    batch_size: int
    lr: float
    weight_decay: float
    confusions: dict[str, tuple[str, ...]]  # attribute -> label columns its test verdicts are broken down by
    weights: str  # a judge file (format geogan-judge/1) to use instead of training one
    device: str


@dataclass(frozen=True)
class PromoteConfig:
    """The gate a candidate must pass to become `champion`."""

    min_transfer_success: float  # the judge's verdict on a*
    max_kid_vs_copy_paste: float  # kid_a2b at most this multiple of the copy-paste baseline's
    min_identity_kept: float  # share of pairs whose output stays the source's person; 0 = not gated
    max_landmark_error: float
    allow_worse_than_champion: bool


@dataclass(frozen=True)
class MlflowConfig:
    """Tracking defaults; the MLFLOW_TRACKING_URI environment variable overrides the URI."""

    tracking_uri: str
    artifact_root: str
    experiment_prefix: str


@dataclass(frozen=True)
class RegionConfig:
    """Where an attribute sits: landmark points, widened by margins (see `geogan.landmarks.regions`)."""

    points: tuple[int, ...]  # iBUG-68 indices the attribute covers
    margin: tuple[float, ...]  # (along the eyes, across) widening per side, in inter-ocular distances
    crop: tuple[float, ...]  # (h, w) of the region crop as fractions of the image size


@dataclass(frozen=True)
class Config:
    """The whole of params.yaml."""

    attributes: tuple[str, ...]
    seed: int
    regions: dict[str, RegionConfig]  # attribute -> its landmark region
    data: DataConfig
    landmarks: LandmarksConfig
    split: SplitConfig
    model: ModelConfig
    loss: LossConfig
    train: TrainConfig
    judge: JudgeConfig
    evaluate: EvaluateConfig
    promote: PromoteConfig
    mlflow: MlflowConfig


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> Config:
    """Load and validate params.yaml.

    Args:
        path: the params file.
        overrides: dotted keys to replace after loading, e.g. {"train.steps": 10}.
    Returns:
        The validated, frozen `Config`.
    Raises:
        ConfigError: naming the file and key that is unknown, missing or mistyped.
    """
    path = Path(path)
    raw = _read_params(path, seen=())
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value, path)
    return config_from_dict(raw, source=str(path))


EXTENDS = "extends"  # a variant file's key naming its base file, relative to the variant


def _read_params(path: Path, seen: tuple[Path, ...]) -> dict:
    """The params file as a mapping, merged onto its base (`extends`) when it names one."""
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_ParamsLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    if EXTENDS not in raw:
        return raw
    base = raw.pop(EXTENDS)
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{path}: '{EXTENDS}' must name a params file, got {base!r}")
    base_path = (path.parent / base).resolve()
    if not base_path.is_file():
        raise ConfigError(f"{path}: '{EXTENDS}: {base}': {base_path} not found")
    if base_path in seen or base_path == path.resolve():
        raise ConfigError(f"{path}: '{EXTENDS}: {base}' comes back to a file it extends")
    return _merge(_read_params(base_path, (*seen, path.resolve())), raw, Config)


def _merge(base: dict, variant: Mapping[str, Any], cls: type) -> dict:
    """`variant` over `base`: sections (dataclass fields) merge key by key, every other value replaces.

    A mapping that is data, not a section (regions, populations, ...), is replaced whole, so a
    variant can drop entries; an unknown key is left in place for `config_from_dict` to name.
    """
    hints = typing.get_type_hints(cls)
    out = dict(base)
    for key, value in variant.items():
        tp = hints.get(key)
        if tp is not None and dataclasses.is_dataclass(tp) and isinstance(value, Mapping) \
                and isinstance(base.get(key), Mapping):
            out[key] = _merge(base[key], value, tp)
        else:
            out[key] = value
    return out


def resolve_params(path: str | Path) -> dict[str, Any]:
    """A params file with its `extends` chain resolved and checked: every key, as params.yaml holds them."""
    return config_to_dict(load_config(path))


def config_from_dict(raw: Mapping[str, Any], source: str = "params") -> Config:
    """Build a `Config` from a nested mapping with every key present (strict)."""
    from geogan.config_ranges import population_errors, range_errors, region_errors

    cfg = _build(Config, raw, prefix="", source=source)
    errors = range_errors(cfg, source)
    if errors:
        raise ConfigError(errors[0] + (f" (and {len(errors) - 1} more out of range)" if len(errors) > 1 else ""))
    for error in region_errors(cfg, source) + population_errors(cfg, source):
        raise ConfigError(error)
    return cfg


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """The config as a nested dict of plain values (tuples as lists), as in params.yaml."""
    return _plain(dataclasses.asdict(cfg))


def flatten(cfg: Config) -> dict[str, Any]:
    """Dotted key -> value, for MLflow params."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}." if isinstance(v, dict) else f"{prefix}{k}")
        else:
            out[prefix] = node

    for k, v in config_to_dict(cfg).items():
        walk(v, f"{k}." if isinstance(v, dict) else k)
    return {k.rstrip("."): v for k, v in out.items()}


def check_attribute(cfg: Config, attribute: str) -> str:
    """Return `attribute` if params.yaml lists it, else raise a ConfigError naming it."""
    if attribute in cfg.attributes:
        return attribute
    hint = difflib.get_close_matches(attribute, cfg.attributes, n=1)
    suggestion = f"; did you mean '{hint[0]}'?" if hint else ""
    raise ConfigError(f"attribute '{attribute}' is not in params.yaml attributes {list(cfg.attributes)}{suggestion}")


def _build(cls: type, raw: Any, prefix: str, source: str) -> Any:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: '{prefix.rstrip('.') or '<top>'}' must be a mapping, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in raw:
        if key not in fields:
            hint = difflib.get_close_matches(str(key), fields, n=1)
            suggestion = f"; did you mean '{prefix}{hint[0]}'?" if hint else ""
            raise ConfigError(f"{source}: unknown key '{prefix}{key}'{suggestion}")
    values = {}
    for name in fields:
        if name not in raw:
            raise ConfigError(f"{source}: missing key '{prefix}{name}'")
        values[name] = _coerce(hints[name], raw[name], f"{prefix}{name}", source)
    return cls(**values)


def _coerce(tp: Any, value: Any, key: str, source: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, prefix=f"{key}.", source=source)
    origin = typing.get_origin(tp)
    if origin is Literal:
        options = typing.get_args(tp)
        if value is False and "off" in options:  # a bare `off` is YAML 1.1's false; `dvc exp run -S` writes one
            value = "off"
        if value not in options:
            raise ConfigError(f"{source}: '{key}' must be one of {list(options)}, got {value!r}")
        return value
    if origin is dict:
        (key_tp, item_tp) = typing.get_args(tp)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{source}: '{key}' must be a mapping, got {type(value).__name__}")
        return {_coerce(key_tp, k, key, source): _coerce(item_tp, v, f"{key}.{k}", source) for k, v in value.items()}
    if origin is tuple:
        (item_tp, _) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: '{key}' must be a list, got {type(value).__name__}")
        items = tuple(_coerce(item_tp, v, f"{key}[{i}]", source) for i, v in enumerate(value))
        if item_tp is not float and len(set(items)) != len(items):  # numbers like margins may repeat
            raise ConfigError(f"{source}: '{key}' has duplicates: {list(items)}")
        return items
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"{source}: '{key}': union types are not supported in the schema")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: '{key}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: '{key}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _is_number(value):
            raise ConfigError(f"{source}: '{key}' must be a number, got the string {value!r} (write it unquoted, e.g. 1.0e-4)")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: '{key}' must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: '{key}' must be a string, got {value!r}")
        return value
    raise ConfigError(f"{source}: '{key}': unsupported type {tp}")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _set_dotted(raw: dict, dotted: str, value: Any, path: Path) -> None:
    parts = dotted.split(".")
    node = raw
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            raise ConfigError(f"{path}: override '{dotted}': '{part}' is not a section")
        node = node[part]
    node[parts[-1]] = value


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
