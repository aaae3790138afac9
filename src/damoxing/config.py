"""Typed config, validated once at the edge.

A config is a YAML file (or a dict) plus `--set key.path=value` overrides. It is validated with
pydantic v2 before any work starts; unknown keys and bad values raise `ConfigError` with one
paragraph naming the key, the bad value and what would be valid. The `model:` section is a union
of every registered model family's own config class, chosen by `model.type`.
"""

from __future__ import annotations

import json
import re
import types
from pathlib import Path
from typing import (
    Annotated,
    Any,
    ClassVar,
    Literal,
    Optional,
    Union,
    get_args,
    get_origin,
)

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from damoxing.core.errors import ConfigError, did_you_mean

Size = Literal["tiny", "small", "base"]


Widths = list[Annotated[int, Field(ge=1)]]  # layer widths / channels: a 0 would build a model that learns nothing


def _bool_for_number(value: Any, annotation: Any) -> bool:
    """true/false given where the annotation wants an int or float (also inside Optional, lists and tuples):
    pydantic would silently read it as 1/0."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        return any(_bool_for_number(value, a) for a in get_args(annotation) if a is not type(None))
    if origin is Annotated:
        return _bool_for_number(value, get_args(annotation)[0])
    if origin in (list, tuple) and isinstance(value, (list, tuple)) and get_args(annotation):
        return any(_bool_for_number(v, get_args(annotation)[0]) for v in value)
    return isinstance(value, bool) and annotation in (int, float)


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are errors, and true/false is not a number."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, value in data.items():
                field = cls.model_fields.get(key) if isinstance(key, str) else None
                if field is not None and _bool_for_number(value, field.annotation):
                    what = "must hold numbers" if isinstance(value, (list, tuple)) else "must be a number"
                    raise ValueError(f"'{key}' {what}, not {json.dumps(value)} (true/false is not read as 1/0)")
        return data


class SplitConfig(StrictModel):
    val: float = Field(0.1, ge=0, lt=1, description="fraction of rows for validation")
    test: float = Field(0.2, ge=0, lt=1, description="fraction of rows for the test set")
    stratify: bool = Field(True, description="keep class proportions in every split (classification)")
    seed: int = 0


class PreprocessConfig(StrictModel):
    numeric_impute: Literal["mean", "median"] = "mean"
    scaling: Literal["standard", "minmax", "none"] = "standard"
    categorical: Literal["onehot", "ordinal"] = "onehot"
    max_categories: int = Field(100, ge=1, description="a categorical column keeps at most this many of its most frequent values; the rest share one '<other>' input")
    min_category_count: int = Field(1, ge=1, description="a category seen fewer times than this in the training rows goes to '<other>'")
    image: Literal["standard", "minmax", "none"] = "standard"
    scale_target: bool = Field(True, description="standardize a regression target while training")


class TokenizerConfig(StrictModel):
    """How text becomes token ids: a tokenizer trained on the training split (Hugging Face `tokenizers`), or an existing one."""

    kind: Literal["bpe", "wordpiece", "char"] = Field("bpe", description="bpe: byte-level BPE (never an unknown character); wordpiece: BERT-style; char: one token per character")
    vocab_size: int = Field(8000, ge=16, description="largest vocabulary to train (special tokens included); small data gives fewer")
    min_frequency: int = Field(2, ge=1, description="bpe/wordpiece: a merge or word must occur this often in the training text")
    lowercase: bool = False
    max_length: Optional[int] = Field(None, ge=1, description="text: pad/truncate every text to this many tokens; default: the longest training text, at most 512 and the model's context")
    path: Optional[str] = Field(None, description="use this tokenizer instead of training one: a run folder, a folder holding a Hugging Face tokenizer.json, or a tokenizer.json file")


class DataConfig(StrictModel):
    source: str = Field(..., description="builtin:NAME | path to .csv .parquet .npz .npy .idx[.gz] .txt | a folder (IDX files, or .txt documents)")
    target: Optional[str] = Field(None, description="column to predict; default: label/target/y/class or the last column")
    labels: Optional[str] = Field(None, description="labels file for .npy / IDX images")
    features: Optional[list[str]] = Field(None, description="input columns; default: every column but the target")
    exclude: list[str] = Field(default_factory=list, description="table columns kept out of the model's inputs (e.g. a sensitive attribute that `damoxing audit` still reads from the data)")
    columns: dict[str, Literal["numeric", "categorical", "text", "date", "drop"]] = Field(
        default_factory=dict, description="a table column's kind, overriding the automatic choice: {NAME: numeric | categorical | text | date | drop}")
    split: SplitConfig = SplitConfig()
    preprocess: PreprocessConfig = PreprocessConfig()
    text: Optional[str] = Field(None, description="the text column of a CSV/Parquet table, for text models (rnn, transformer, gpt); default: the only column besides the target")
    block_size: Optional[int] = Field(None, ge=2, description="language modelling: tokens per training block; default: the model's context length")
    tokenizer: TokenizerConfig = TokenizerConfig()


class OptimizerConfig(StrictModel):
    name: str = Field("adam", description="an optimizer registered in training/optim.py")
    lr: float = Field(1e-3, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)


class ScheduleConfig(StrictModel):
    name: str = Field("constant", description="a schedule registered in training/optim.py")
    warmup_epochs: float = Field(0.0, ge=0, description="linear warm-up from 0 over this many epochs")
    step_epochs: int = Field(10, ge=1, description="step: multiply lr by gamma every step_epochs")
    gamma: float = Field(0.1, gt=0, le=1)
    patience: int = Field(3, ge=0, description="reduce_on_plateau: epochs without improvement")
    factor: float = Field(0.5, gt=0, lt=1, description="reduce_on_plateau: lr multiplier")
    min_lr: float = Field(0.0, ge=0)


class EarlyStoppingConfig(StrictModel):
    """Stop when `train.monitor` has not improved by min_delta for `patience` epochs."""

    patience: int = Field(10, ge=1)
    min_delta: float = Field(0.0, ge=0)


class AugmentConfig(StrictModel):
    """Image augmentation, done batched on the training device for each training batch (never on val/test)."""

    crop_padding: int = Field(0, ge=0, description="random crop: pad each side by this many pixels (zeros), then crop back to the input size; 0 = off")
    flip: bool = Field(False, description="random horizontal flip of half the images")


class LoaderConfig(StrictModel):
    """The streaming path (data too large for the device): a torch DataLoader over the training rows."""

    workers: Optional[int] = Field(None, ge=0, description="worker processes; default min(4, CPU cores)")
    prefetch_factor: int = Field(2, ge=1, description="batches each worker prepares ahead")


# Approximate annual-average carbon intensity of electricity generation, g CO2 per kWh, rounded
# (public 2023 figures, e.g. Ember / IEA), picked by cost.country. A rough default only: set
# cost.grid_g_per_kwh for your grid.
GRID_G_PER_KWH: dict[str, float] = {
    "WORLD": 480, "EU": 250, "USA": 370, "CAN": 130, "MEX": 420, "BRA": 100, "ARG": 340,
    "GBR": 240, "IRL": 280, "FRA": 55, "DEU": 380, "NLD": 270, "BEL": 150, "CHE": 40, "AUT": 110,
    "ITA": 330, "ESP": 170, "PRT": 160, "SWE": 40, "NOR": 30, "FIN": 80, "DNK": 150, "POL": 660,
    "CZE": 430, "RUS": 440, "TUR": 440, "CHN": 580, "IND": 710, "JPN": 480, "KOR": 430, "TWN": 560,
    "SGP": 470, "IDN": 680, "AUS": 550, "NZL": 110, "ZAF": 710, "SAU": 560, "ARE": 420,
}

_EVERY = re.compile(r"^\s*(\d+)\s*(epochs?|steps?)\s*$")


class PrivacyConfig(StrictModel):
    """Differentially private training (DP-SGD with opacus): per-sample gradient clipping and noise
    sized so the whole run spends at most `epsilon` (trust/privacy.py)."""

    epsilon: float = Field(..., gt=0, description="the privacy budget of the whole run (smaller: more private, less accurate)")
    delta: Literal["auto"] | float = Field("auto", description="the delta of (epsilon, delta)-DP; auto: min(1e-5, 1 / (10 N)), below 1/N for N training rows")
    max_grad_norm: float = Field(1.0, gt=0, description="each sample's gradient is clipped to this L2 norm")
    accountant: Literal["prv", "rdp"] = Field("prv", description="how spent epsilon is computed: prv (tighter) or rdp")
    physical_batch_size: Optional[int] = Field(None, ge=1, description="rows per forward/backward pass (memory); the logical batch is still train.batch_size")

    @field_validator("delta")
    @classmethod
    def _delta(cls, value: Any) -> Any:
        if value != "auto" and not 0 < float(value) < 1:
            raise ValueError(f"must be 'auto' or a number in (0, 1) (well below 1/N for N training rows), not {value}")
        return value


class FederatedConfig(StrictModel):
    """Federated averaging, simulated in one process (trust/federated.py): the training split is
    partitioned across clients; each round a sample of them trains locally and the server averages."""

    clients: int = Field(10, ge=2, description="simulated clients the training rows are partitioned across")
    rounds: int = Field(30, ge=1, description="communication rounds (train.epochs is not used)")
    local_epochs: int = Field(1, ge=1, description="epochs each sampled client trains on its own rows per round")
    fraction: float = Field(0.5, gt=0, le=1, description="share of clients sampled each round, in (0, 1]")
    partition: Literal["iid", "dirichlet"] = Field("iid", description="iid: rows shuffled evenly; dirichlet: label shares per client drawn from Dirichlet(alpha) (non-IID)")
    alpha: float = Field(0.5, gt=0, description="dirichlet: concentration; small (0.1) = each client sees few labels")
    algorithm: Literal["fedavg", "fedprox"] = "fedavg"
    mu: float = Field(0.01, ge=0, description="fedprox: weight of the proximal term mu/2 ||w - w_global||^2")
    secure_aggregation: bool = Field(False, description="clients send weights under pairwise additive masks that cancel in the sum: the server only sees the sum")


class TrainConfig(StrictModel):
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(64, ge=1)
    eval_batch_size: int = Field(1024, ge=1)
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    early_stopping: Optional[EarlyStoppingConfig] = None
    monitor: str = Field("val_loss", description="val_loss or val_<metric> (e.g. val_accuracy): picks the best epoch, drives early stopping and reduce_on_plateau")
    monitor_mode: Literal["auto", "min", "max"] = Field("auto", description="auto: max for accuracy-like metrics, min for losses")
    restore_best: bool = Field(True, description="end with the weights of the best epoch by `monitor`")
    loss: str = Field("auto", description="auto (the task's default) or a loss registered in tasks/base.py")
    l1: float = Field(0.0, ge=0)
    l2: float = Field(0.0, ge=0)
    clip_grad_norm: Optional[float] = Field(None, gt=0)
    grad_accum_steps: int = Field(1, ge=1)
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 autocast on CUDA, fp32 elsewhere")
    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$", description="auto picks cuda > mps > cpu")
    compile: Literal["auto", "on", "off"] = Field("auto", description="torch.compile; auto: on CUDA only")
    seed: int = 0
    log_every: int = Field(50, ge=1, description="steps between reads of the running loss (no per-step host sync)")
    sample_every: int = Field(5, ge=0, description="generation: save a fixed-seed sample grid samples_epoch_K.png every N epochs (0: only samples.png at the end)")
    augment: Optional[AugmentConfig] = Field(None, description="image augmentation on the device: {crop_padding: 4, flip: true}")
    data_on_device: Literal["auto", True, False] = Field(
        "auto", description="true: training tensors live on the device, batched there; false: stream through a DataLoader; auto: on the device when they take at most half of its free memory")
    loader: LoaderConfig = LoaderConfig()
    channels_last: Literal["auto", "on", "off"] = Field("auto", description="channels_last memory format for conv nets; auto: on CUDA only")
    tf32: bool = Field(True, description="TF32 matmuls and convolutions on CUDA (float32 precision 'high')")
    distributed: Literal["auto", "ddp", "fsdp"] = Field(
        "auto", description="with several processes (--nproc): ddp replicates the model, fsdp shards it; auto: fsdp from fsdp_min_params parameters")
    fsdp_min_params: int = Field(500_000_000, ge=1, description="distributed auto: shard models with at least this many parameters")
    checkpoint_every: Optional[str] = Field(
        None, description="write a resumable checkpoint every 'N epochs' or 'N steps' (a bare number means epochs); resume with `damoxing train --resume RUN`")
    federated: Optional[FederatedConfig] = Field(None, description="federated averaging over simulated clients: {clients: 10, rounds: 30, local_epochs: 1, fraction: 0.5, partition: iid}; with privacy: client-level DP-FedAvg")
    privacy: Optional[PrivacyConfig] = Field(None, description="differential privacy (DP-SGD): {epsilon: 3.0, delta: auto, max_grad_norm: 1.0, accountant: prv, physical_batch_size: N}")

    @field_validator("checkpoint_every", mode="before")
    @classmethod
    def _every(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            value = f"{value} epochs"
        match = _EVERY.match(str(value))
        if not match or int(match.group(1)) < 1:
            raise ValueError("must be 'N epochs' or 'N steps' with N >= 1 (e.g. 1, '2 epochs', '500 steps')")
        unit = "epochs" if match.group(2).startswith("epoch") else "steps"
        return f"{int(match.group(1))} {unit}"

    def checkpoint_interval(self) -> Optional[tuple[int, str]]:
        """(N, 'epochs' | 'steps') from checkpoint_every, or None when checkpoints are off."""
        if self.checkpoint_every is None:
            return None
        number, unit = self.checkpoint_every.split()
        return int(number), unit


class EvaluateConfig(StrictModel):
    """How the test metrics' uncertainty is stated: bootstrap intervals and calibration bins."""

    bootstrap: int = Field(1000, ge=0, description="bootstrap resamples for the test metrics' intervals (seeded by train.seed); 0 turns them off")
    confidence: float = Field(0.95, gt=0, lt=1, description="coverage of the bootstrap intervals")
    calibration_bins: int = Field(10, ge=1, le=100, description="equal-width bins of the reliability diagram (classification)")


class CostConfig(StrictModel):
    """What a run's cost block in manifest.json measures, and the figures its energy estimate uses."""

    enabled: bool = Field(True, description="write the cost block (parameters, FLOPs, time, memory, energy, CO2)")
    energy: Literal["auto", "codecarbon", "estimate"] = Field(
        "auto", description="auto: codecarbon's offline tracker when installed, else estimate (TDP x utilization x time)")
    country: str = Field("WORLD", description="ISO 3166 alpha-3 code (e.g. USA, FRA, CHN) picking a grid carbon intensity from the built-in table")
    grid_g_per_kwh: Optional[float] = Field(None, gt=0, description="grid carbon intensity in g CO2 per kWh; overrides country")
    cpu_watts_per_core: float = Field(10.0, gt=0, description="CPU power per fully busy core (TDP / cores) for the estimate")
    gpu_watts: Optional[float] = Field(None, gt=0, description="GPU board power for the estimate; default from a table by device name")
    peak_flops: Optional[float] = Field(None, gt=0, description="device peak FLOP/s for MFU; default from a table by device name (CUDA)")

    @field_validator("country")
    @classmethod
    def _known_country(cls, value: str) -> str:
        code = value.strip().upper()
        if code not in GRID_G_PER_KWH:
            raise ValueError(
                f"no grid carbon intensity is built in for '{value}'.{did_you_mean(code, GRID_G_PER_KWH)} "
                f"Known codes: {', '.join(GRID_G_PER_KWH)}; or give your grid's figure as cost.grid_g_per_kwh"
            )
        return code


class TrackingConfig(StrictModel):
    """Where a run is recorded besides its run folder."""

    mlflow: Optional[str] = Field(None, description="MLflow tracking URI: sqlite:///runs/mlflow.db (embedded) or http://host:5000 (a team server)")
    experiment: Optional[str] = Field(None, description="MLflow experiment name; default: the config's name")
    report: bool = Field(True, description="write report.html (an offline HTML model card) into the run folder")

    @field_validator("mlflow")
    @classmethod
    def _is_uri(cls, value: Optional[str]) -> Optional[str]:
        # A bare path would silently become MLflow's file store in a folder of that name.
        if value is not None and not re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*:", value):
            raise ValueError(f"'{value}' is not a tracking URI; use sqlite:///runs/mlflow.db (embedded, a file) "
                             "or http://host:5000 (an MLflow server)")
        return value


class ModelConfigBase(StrictModel):
    """Base of every model family's options. `size` picks a preset; explicit options override it."""

    PRESETS: ClassVar[dict] = {}  # size -> {option: value}, filled into options left unset (None)
    size: Size = "small"
    init_from: Optional[str] = Field(None, description="start from another run's weights (its run folder): tensors with the same name and shape are loaded, the rest (e.g. a new head) start fresh and are reported")

    @classmethod
    def tiny(cls, schema: Any, folder: Path) -> "ModelConfigBase":
        """The smallest config of this family that runs on data described by `schema` (a DataSchema),
        for contract tests that check every family in milliseconds; `folder` is scratch space for a
        family that needs files (pretrained: a random checkpoint). Default: the `tiny` size preset."""
        return cls(size="tiny")


class SearchSpace(StrictModel):
    """One searched config key: a range (low, high; log scale or a step) or a list of choices."""

    low: Optional[int | float] = None
    high: Optional[int | float] = None
    log: bool = False
    step: Optional[int | float] = Field(None, gt=0)
    choices: Optional[list[Any]] = None

    @model_validator(mode="after")
    def _valid(self) -> "SearchSpace":
        if self.choices is not None:
            if self.low is not None or self.high is not None:
                raise ValueError("give either choices or low/high, not both")
            if not self.choices:
                raise ValueError("choices is empty; list at least one value")
            return self
        if self.low is None or self.high is None:
            raise ValueError("a range needs both low and high (or give choices: [...])")
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) is above high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"log: true needs low > 0 (low is {self.low})")
        return self

    @property
    def integer(self) -> bool:
        """A range of whole numbers (both ends written as integers): sampled as int."""
        return self.choices is None and isinstance(self.low, int) and isinstance(self.high, int)


class TuneConfig(StrictModel):
    """`damoxing tune`: which config keys to search, what to maximise, how to sample and prune."""

    metric: Optional[str] = Field(None, description="validation metric to optimise (val_loss or val_<metric>); default: train.monitor")
    direction: Literal["auto", "maximize", "minimize"] = Field("auto", description="auto: maximize accuracy-like metrics, minimize losses")
    objectives: Optional[list[str]] = Field(None, description="multi-objective search: e.g. [val_accuracy, flops] (flops and params are minimised); returns the Pareto set")
    sampler: Literal["tpe", "random", "grid", "cmaes"] = "tpe"
    pruner: Literal["hyperband", "median", "none"] = "hyperband"
    trials: int = Field(20, ge=1, description="trials to run (in total over every process and rerun of the study)")
    search: dict[str, SearchSpace] = Field(..., description="dotted config key -> {low, high, log, step} or {choices: [...]}")

    @field_validator("search")
    @classmethod
    def _not_empty(cls, value: dict) -> dict:
        if not value:
            raise ValueError("the search space is empty; name at least one config key, e.g. train.optimizer.lr: {low: 1.0e-4, high: 0.1, log: true}")
        return value


class ConfigBase(StrictModel):
    name: str = Field("run", pattern=r"^[A-Za-z0-9_.\-]+$")
    task: Optional[str] = Field(None, description="a registered task; inferred from the data when omitted")
    data: DataConfig
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    cost: CostConfig = CostConfig()
    tracking: TrackingConfig = TrackingConfig()
    tune: Optional[TuneConfig] = Field(None, description="hyperparameter search for `damoxing tune` (train ignores it)")


# ---------------------------------------------------------------------------------------------
# Loading: YAML + overrides -> validated Config


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (plain YAML keeps the last, silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"the key '{key}' appears twice in one section (lines {seen[key]} and "
                                  f"{key_node.start_mark.line + 1}); keep one of them.")
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"Config file '{path}' does not exist. Write one with `damoxing init` or pass the path of an existing YAML file.") from None
    except IsADirectoryError:
        raise ConfigError(f"'{path}' is a folder, not a config file; pass a YAML file (e.g. {path}/config.yaml).") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"Config file '{path}' is not UTF-8 text (byte {e.start} cannot be decoded); save it as UTF-8.") from None
    except OSError as e:  # a symlink loop, permissions
        raise ConfigError(f"Config file '{path}' cannot be read: {e.strerror or e}.") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except ConfigError as e:
        raise ConfigError(f"Config file '{path}': {e.message}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"Config file '{path}' is not valid YAML: {e}") from None
    if data is None:
        raise ConfigError(f"Config file '{path}' is empty. It needs at least `data: {{source: ...}}` and `model: {{type: ...}}`; `damoxing init` writes a starter.")
    if not isinstance(data, dict):
        raise ConfigError(f"Config file '{path}' must hold a mapping of keys (name, task, data, model, train), not a {type(data).__name__}.")
    return data


def parse_override(text: str) -> tuple[str, Any]:
    """'train.optimizer.lr=0.1' -> ('train.optimizer.lr', 0.1); the value is parsed as a YAML scalar."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"Override '{text}' is not of the form key.path=value (e.g. --set train.epochs=5).")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    if isinstance(parsed, str) and re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+", parsed.strip()):
        parsed = float(parsed)  # YAML 1.1 reads '1e-3' as text; people mean a number
    return key.strip(), parsed


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys in a nested dict (a copy); intermediate sections are created."""
    import copy

    out = copy.deepcopy(data)
    for dotted, value in overrides.items():
        node = out
        parts = dotted.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"Override '{dotted}': '{part}' holds a value ({child!r}), not a section with keys.")
            node = child
        node[parts[-1]] = value
    return out


def dump_config(config: BaseModel) -> str:
    """The resolved config as YAML, every default filled in."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
