"""Run folders side by side: read them (lazily), check they are comparable, and the typed result.

`damoxing compare` (verbs/compare.py) reads finished run folders, and a comparison is only a
comparison when every run was scored on the very same test rows: same task, same data (the
manifest's fingerprint), same test indices (splits.npz) and the same targets on them
(predictions_test.npz). Anything else is refused here with a message naming which runs differ
and how. Reading is lazy: a run's manifest and metrics are read at once (small JSON); its split
indices, predictions and history only when asked for, and never its model.

`Comparison` is the result: what compare.json holds (`to_dict` / `from_dict`), what compare.html
and the terminal table show, and what `damoxing.compare([...])` returns.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Any, Optional

import numpy as np

from damoxing.core.errors import DataError, RunFolderError, UserError
from damoxing.runs.folder import check_run, read_json

# --cost NAME -> (where in the cost block, a fallback elsewhere in the manifest, label with unit)
COST_AXES: dict[str, tuple[str, Optional[tuple[str, str]], str]] = {
    "params": ("params", ("model", "params"), "parameters"),
    "flops": ("flops_per_sample", None, "forward FLOPs per sample"),
    "seconds": ("train_seconds", ("timings", "train_seconds"), "training seconds"),
    "energy": ("energy_kwh", None, "energy (kWh)"),
}
UNSIZED = ("linear",)  # families without size presets: their config's default `size` says nothing


# --------------------------------------------------------------------------- reading


class RunRecord:
    """One finished run folder, read lazily: manifest and metrics now, the rest on first use."""

    def __init__(self, path: str | Path):
        self.path = check_run(path)
        if not (self.path / "metrics.json").exists():
            raise RunFolderError(f"'{path}' has no metrics.json: it is not a finished, evaluated run. Compare runs that "
                                 "`damoxing train` (or `ladder`) completed.")
        self.manifest: dict = read_json(self.path / "manifest.json")
        self.metrics: dict = read_json(self.path / "metrics.json")
        self.name = self.path.name

    @property
    def task(self) -> str:
        return str(self.manifest.get("task", ""))

    @property
    def fingerprint(self) -> Optional[str]:
        return (self.manifest.get("data") or {}).get("fingerprint")

    @property
    def source(self) -> str:
        return str((self.manifest.get("data") or {}).get("source", ""))

    @cached_property
    def config(self) -> dict:
        import yaml

        try:
            return yaml.load((self.path / "config.yaml").read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
        except (OSError, yaml.YAMLError):
            return {}

    @property
    def family(self) -> str:
        """What kind of model, in a few words: 'mlp small', 'cnn base', 'HistGradientBoostingClassifier'."""
        model = self.manifest.get("model") or {}
        if model.get("estimator"):
            return str(model["estimator"])
        options = self.config.get("model") or {}
        kind = str(model.get("type") or options.get("type") or "?")
        extra = options.get("finetune") if kind == "pretrained" else (None if kind in UNSIZED else options.get("size"))
        return f"{kind} {extra}" if extra else kind

    @property
    def is_reference(self) -> bool:
        return (self.manifest.get("model") or {}).get("type") == "sklearn"

    def cost(self, axis: str) -> Optional[float]:
        """The run's value on a cost axis (COST_AXES), or None if it did not record it."""
        key, fallback, _ = COST_AXES[axis]
        value = (self.manifest.get("cost") or {}).get(key)
        if value is None and fallback is not None:
            value = (self.manifest.get(fallback[0]) or {}).get(fallback[1])
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    @cached_property
    def test_indices(self) -> Optional[np.ndarray]:
        file = self.path / "splits.npz"
        if not file.exists():
            return None
        with np.load(file, allow_pickle=False) as data:
            return data["test"] if "test" in data.files else None

    @cached_property
    def predictions(self) -> Optional[dict[str, np.ndarray]]:
        """predictions_test.npz as plain arrays (y_true with proba + pred, or y_pred), or None."""
        file = self.path / "predictions_test.npz"
        if not file.exists():
            return None
        with np.load(file, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}

    @cached_property
    def history(self) -> list[dict]:
        from damoxing.runs.folder import read_history

        try:
            return read_history(self.path)
        except (OSError, json.JSONDecodeError):
            return []


def read_runs(paths: list[str | Path]) -> list[RunRecord]:
    """Every path as a RunRecord (a path that is not a finished run: RunFolderError); at least two,
    each once. Display names are the folder names, with the parent folder added where two clash."""
    if len(paths) < 2:
        raise UserError(f"compare needs at least two runs, got {len(paths)}. Pass two or more run folders "
                        "(e.g. `damoxing compare runs/a runs/b`), or train a ladder with `damoxing ladder CONFIG`.")
    records = [RunRecord(p) for p in paths]
    seen: dict[Path, str] = {}
    for record in records:
        key = record.path.resolve()
        if key in seen:
            raise UserError(f"'{record.path}' is given twice (as '{seen[key]}' too); compare each run once.")
        seen[key] = str(record.path)
    counts: dict[str, int] = {}
    for record in records:
        counts[record.name] = counts.get(record.name, 0) + 1
    for record in records:
        if counts[record.name] > 1:
            record.name = f"{record.path.parent.name}/{record.path.name}"
    return records


# --------------------------------------------------------------------------- comparable?


def _groups(records: list[RunRecord], key) -> dict[Any, list[str]]:
    out: dict[Any, list[str]] = {}
    for record in records:
        out.setdefault(key(record), []).append(record.name)
    return out


def _names(names: list[str]) -> str:
    return ", ".join(f"'{n}'" for n in names)


def check_comparable(records: list[RunRecord]) -> None:
    """Refuse runs that are not scored on the same rows: another task, other data, other test rows
    or other targets on them. The message names which runs differ and how."""
    tasks = _groups(records, lambda r: r.task)
    if len(tasks) > 1:
        parts = "; ".join(f"{_names(n)} {t or 'unknown'}" for t, n in tasks.items())
        raise DataError(f"These runs do different tasks ({parts}); their metrics do not measure the same thing, so they "
                        "cannot be compared. Compare runs of one task.")
    data = _groups(records, lambda r: r.fingerprint)
    if len(data) > 1:
        parts = "; ".join(f"{_names(n)} used data {str(f)[:12]}… ({_source(records, n[0])})" for f, n in data.items())
        raise DataError(f"These runs were trained on different data ({parts}). A comparison on different rows is not a "
                        "comparison: compare runs whose data.source holds the same rows (the manifest's data fingerprint).")
    _check_same_test_rows(records)


def _source(records: list[RunRecord], name: str) -> str:
    return next(r.source for r in records if r.name == name)


def _check_same_test_rows(records: list[RunRecord]) -> None:
    first = records[0]
    for record in records[1:]:
        a, b = first.test_indices, record.test_indices
        if a is None or b is None:
            missing = first if a is None else record
            raise RunFolderError(f"'{missing.name}' has no splits.npz test indices, so there is no telling whether it was "
                                 "tested on the same rows as the others. Compare runs written by `damoxing train`.")
        if not np.array_equal(a, b):
            raise DataError(f"'{first.name}' and '{record.name}' were tested on different rows ({_rows_differ(a, b)}): their "
                            "data.split settings (fractions or seed) differ. A comparison on different rows is not a "
                            "comparison; train the runs with the same data.split.")
        pa, pb = first.predictions, record.predictions
        if pa is not None and pb is not None and "y_true" in pa and "y_true" in pb and not np.array_equal(pa["y_true"], pb["y_true"]):
            raise DataError(f"'{first.name}' and '{record.name}' hold different targets for the same test rows "
                            "(predictions_test.npz y_true): their labels were encoded differently or the data changed. "
                            "Compare runs trained on the same data and target.")


def _rows_differ(a: np.ndarray, b: np.ndarray) -> str:
    if len(a) != len(b):
        return f"{len(a)} and {len(b)} test rows"
    return f"{int(np.sum(a != b))} of {len(a)} test row indices differ"


# --------------------------------------------------------------------------- the result


@dataclass
class RunEntry:
    """One run's row of the comparison."""

    name: str
    path: str
    family: str
    model: str
    reference: bool
    seed: Optional[int]
    value: Optional[float]  # the metric on the test split
    ci: Optional[list[float]]  # its bootstrap interval
    baseline: Optional[float]
    params: Optional[float]
    flops_per_sample: Optional[float]
    train_seconds: Optional[float]
    energy_kwh: Optional[float]
    cost: Optional[float]  # on the comparison's cost axis
    on_frontier: bool = False
    seed_spread: Optional[dict] = None  # ladder --seeds K: {"seeds", "values", "std", "min", "max"}


@dataclass
class PairTest:
    """A paired test of run `a` against run `b` on the same test rows (difference = a - b)."""

    a: str
    b: str
    why: list[str]  # "vs best", "adjacent by cost"
    difference: float
    ci: Optional[list[float]]
    bootstrap_p: Optional[float]
    bootstrap_p_holm: Optional[float] = None
    mcnemar: Optional[dict] = None  # {"b", "c", "n_discordant", "p_exact", "p_mid", "p_exact_holm", "p_mid_holm"}
    decided_by: str = "bootstrap"  # "mcnemar" (accuracy) | "bootstrap"
    p_decisive: Optional[float] = None  # the deciding p after Holm
    real: bool = False  # p_decisive <= alpha
    better: Optional[str] = None  # the better run's name when real
    verdict: str = ""


@dataclass
class Comparison:
    """What `damoxing compare` found; compare.json is `to_dict()`."""

    task: str
    metric: str
    greater_is_better: bool
    cost: str  # params | flops | seconds | energy
    cost_label: str
    runs: list[RunEntry]
    best: Optional[str]
    tests: list[PairTest] = field(default_factory=list)
    paired: bool = False  # whether paired tests were possible
    frontier: list[str] = field(default_factory=list)  # names, by increasing cost
    prices: list[dict] = field(default_factory=list)  # paired.frontier_prices steps, with run names
    notes: list[str] = field(default_factory=list)
    alpha: float = 0.05
    n_test: Optional[int] = None
    n_resamples: int = 0
    seconds: float = 0.0
    path: Optional[str] = None  # the folder compare.json and compare.html were written to
    extra: dict = field(default_factory=dict)  # e.g. the ladder's failed rungs

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Comparison":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["runs"] = [RunEntry(**r) for r in data.get("runs", [])]
        values["tests"] = [PairTest(**t) for t in data.get("tests", [])]
        return cls(**values)

    def entry(self, name: str) -> RunEntry:
        return next(r for r in self.runs if r.name == name)


# --------------------------------------------------------------------------- a privacy sweep


def _without_epsilon(config: dict) -> dict:
    """The config with what a privacy sweep varies taken out: its name, train.privacy.epsilon, and
    train.privacy itself where it is absent (the non-private point of the sweep)."""
    import copy

    config = copy.deepcopy(config)
    config.pop("name", None)
    train = config.get("train") or {}
    if train.get("privacy"):
        train["privacy"] = {k: v for k, v in train["privacy"].items() if k not in ("epsilon", "delta")}
    else:
        train.pop("privacy", None)
    return config


def privacy_sweep(records: list[RunRecord], metric: str) -> Optional[dict]:
    """Runs that differ only in train.privacy.epsilon (one may have no privacy): the points of a
    utility-vs-epsilon curve, by epsilon, {"metric", "points": [{"name", "epsilon", "spent", "value"}]};
    None for any other set of runs."""
    privacies = [(r.config.get("train") or {}).get("privacy") for r in records]
    epsilons = [p.get("epsilon") for p in privacies if p]
    if len(epsilons) < 2 or len(set(epsilons)) < len(epsilons):
        return None
    private_rest = [_without_epsilon(r.config) for r, p in zip(records, privacies) if p]
    if any(rest != private_rest[0] for rest in private_rest[1:]):
        return None
    for r, p in zip(records, privacies):  # a non-private run must match once its privacy is put back
        if not p:
            rest = _without_epsilon(r.config)
            rest.setdefault("train", {})["privacy"] = (private_rest[0].get("train") or {}).get("privacy")
            if rest != private_rest[0]:
                return None
    points = [{"name": r.name, "epsilon": p.get("epsilon") if p else None,
               "spent": (r.manifest.get("privacy") or {}).get("epsilon") if p else None,
               "value": (r.metrics.get("test") or {}).get(metric)} for r, p in zip(records, privacies)]
    points.sort(key=lambda q: float("inf") if q["epsilon"] is None else q["epsilon"])
    return {"parameter": "train.privacy.epsilon", "metric": metric, "points": points}


# ------------------------------------------------------------------------ a federated sweep


def _without_federated_key(config: dict, key: Optional[str]) -> dict:
    """The config without its name and train.federated.<key> (all of train.federated when key is None)."""
    import copy

    config = copy.deepcopy(config)
    config.pop("name", None)
    train = config.setdefault("train", {})
    if key is None or not train.get("federated"):
        train.pop("federated", None)
    else:
        train["federated"] = {k: v for k, v in train["federated"].items() if k != key}
    return config


def federated_sweep(records: list[RunRecord], metric: str) -> Optional[dict]:
    """Runs that differ only in one train.federated setting (clients, rounds, fraction, alpha, partition,
    ...; one run may be trained centrally, without federated): the points of a utility-vs-setting
    curve, {"parameter", "metric", "points": [{"name", "setting", "value", "worst_client", "spread"}],
    "central": the central run's value or None}; None for any other set of runs."""
    feds = [(r.config.get("train") or {}).get("federated") for r in records]
    federated = [(r, f) for r, f in zip(records, feds) if f]
    if len(federated) < 2:
        return None
    varying = [k for k in federated[0][1] if len({json.dumps(f.get(k), sort_keys=True) for _, f in federated}) > 1]
    if len(varying) != 1:
        return None
    key = varying[0]
    rest = [_without_federated_key(r.config, key) for r, _ in federated]
    if any(other != rest[0] for other in rest[1:]):
        return None
    central = [r for r, f in zip(records, feds) if not f]
    if len(central) > 1 or any(_without_federated_key(r.config, None) != _without_federated_key(federated[0][0].config, None) for r in central):
        return None

    def point(r: RunRecord, setting) -> dict:
        clients = ((r.metrics.get("federated") or {}).get("metrics") or {}).get(metric) or {}
        return {"name": r.name, "setting": setting, "value": (r.metrics.get("test") or {}).get(metric),
                "worst_client": clients.get("worst"), "spread": clients.get("spread")}

    points = [point(r, f.get(key)) for r, f in federated]
    if all(isinstance(p["setting"], (int, float)) and not isinstance(p["setting"], bool) for p in points):
        points.sort(key=lambda p: p["setting"])
    return {"parameter": f"train.federated.{key}", "metric": metric, "points": points,
            "central": (central[0].metrics.get("test") or {}).get(metric) if central else None}
