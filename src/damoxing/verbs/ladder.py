"""`damoxing ladder CONFIG`: what does a larger model buy over a traditional one, on this data?

    config -> the data kind and task -> rungs, small to large: scikit-learn references (logistic /
    ridge regression, histogram gradient boosting; verbs/reference.py), then damoxing's own
    families for that kind of data -> each rung trained K times (seeds) on the config's data,
    split and train settings -> `compare` of one run per rung, with the between-seed spread.

Every rung reads the same data with the same data.split, so all runs share their test rows and
the comparison's paired tests apply. A rung that fails (out of memory, an error) is reported in
the comparison, not fatal to the ladder. Layout of the ladder's folder:

    runs/ladder-<name>-<time>/<rung>[-s<seed>]/   one run folder per rung and seed
                              compare/            compare.json, compare.html
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from damoxing.core.console import is_quiet, note, warn
from damoxing.core.errors import UserError, choices_text, did_you_mean
from damoxing.runs.comparison import Comparison


@dataclass(frozen=True)
class Rung:
    """One step of the ladder: a model section, the data kinds and tasks it fits."""

    name: str
    model: dict
    kinds: frozenset[str]
    tasks: frozenset[str] = frozenset({"classification", "regression"})

    @property
    def reference(self) -> bool:
        return self.model["type"] == "sklearn"


TABLES, IMAGES, ROWS = frozenset({"table"}), frozenset({"image"}), frozenset({"table", "image", "sequence"})
TEXT, SEQUENCES, CORPUS = frozenset({"text"}), frozenset({"text", "sequence"}), frozenset({"corpus"})
RUNGS: dict[str, Rung] = {r.name: r for r in [
    Rung("logistic", {"type": "sklearn", "estimator": "logistic_regression"}, ROWS, frozenset({"classification"})),
    Rung("ridge", {"type": "sklearn", "estimator": "ridge"}, ROWS, frozenset({"regression"})),
    Rung("hgb", {"type": "sklearn", "estimator": "hist_gradient_boosting"}, ROWS),
    Rung("linear", {"type": "linear"}, TABLES | IMAGES),
    Rung("mlp-tiny", {"type": "mlp", "size": "tiny"}, TABLES | IMAGES),
    Rung("mlp-small", {"type": "mlp", "size": "small"}, TABLES | IMAGES),
    Rung("mlp-base", {"type": "mlp", "size": "base"}, TABLES | IMAGES),
    Rung("cnn-tiny", {"type": "cnn", "size": "tiny"}, IMAGES),
    Rung("cnn-small", {"type": "cnn", "size": "small"}, IMAGES),
    Rung("cnn-base", {"type": "cnn", "size": "base"}, IMAGES),
    Rung("rnn", {"type": "rnn", "size": "small"}, SEQUENCES),
    Rung("transformer", {"type": "transformer", "size": "small"}, SEQUENCES),
    Rung("minilm-frozen", {"type": "pretrained", "path": "minilm", "finetune": "frozen"}, TEXT),
    Rung("minilm-lora", {"type": "pretrained", "path": "minilm", "finetune": "lora"}, TEXT),
    Rung("gpt-tiny", {"type": "gpt", "size": "tiny"}, CORPUS, frozenset({"language_modeling"})),
    Rung("gpt-small", {"type": "gpt", "size": "small"}, CORPUS, frozenset({"language_modeling"})),
]}
DEFAULT_RUNGS = {  # by data kind, small to large (references first); a rung that does not fit the task is skipped
    "table": ["logistic", "ridge", "hgb", "linear", "mlp-small", "mlp-base"],
    "image": ["logistic", "hgb", "linear", "mlp-small", "cnn-small", "cnn-base"],
    "sequence": ["logistic", "ridge", "hgb", "rnn", "transformer"],
    "text": ["rnn", "transformer", "minilm-frozen", "minilm-lora"],
    "corpus": ["gpt-tiny", "gpt-small"],
}


@dataclass
class Ladder:
    """What `ladder` returns: its folder, the run folders per rung (one per seed), the rungs that
    failed and the comparison of one run per rung."""

    path: Path
    runs: dict[str, list[Path]]
    failed: list[dict]
    comparison: Comparison
    seconds: float
    notes: list[str] = field(default_factory=list)


def ladder(config: str | Path | dict, rungs: Optional[list[str]] = None, seeds: int = 1, out: str | Path | None = None, *,
           metric: Optional[str] = None, cost: str = "params", overrides: Optional[dict[str, Any]] = None,
           quiet: bool = True, n_resamples: int = 2000) -> Ladder:
    """Train a ladder of models on the data of `config`, then compare them.

    Args:
        config: a YAML path or dict; its data, split, train, evaluate and cost sections apply to every
            rung (train settings are ignored by the scikit-learn references), its model section is replaced.
        rungs: rung names (default: DEFAULT_RUNGS for the data kind); `RUNGS` lists every one.
        seeds: K: each rung is trained with seeds train.seed, ..., train.seed + K - 1 (the split stays).
        out: the ladder's new folder (default runs/ladder-<name>-<time>).
        metric, cost, n_resamples: as for `compare`.
        overrides: dotted keys applied to the config first (e.g. {"train.epochs": 5}).
        quiet: no progress bars or per-run notes from training (the ladder still says which rung runs).
    """
    from damoxing.spec import load_config

    started = time.perf_counter()
    if not isinstance(seeds, int) or seeds < 1:
        raise UserError(f"--seeds must be a whole number of at least 1, got {seeds!r}.")
    base_dir = Path(config).resolve().parent if isinstance(config, (str, Path)) else None
    cfg = load_config(config, overrides)
    kind, task = _data_kind(cfg, base_dir)
    chosen = _choose(rungs, kind, task)
    root = _ladder_path(out, cfg.name)
    base = _base_config(cfg, base_dir)
    runs, failed = _train_rungs(chosen, base, seeds, root, quiet)
    if len(runs) < 2:
        reasons = "; ".join(f"{f['rung']} (seed {f['seed']}): {f['error']}" for f in failed)
        raise UserError(f"The ladder needs at least two rungs that train to compare them; {len(runs)} did. "
                        f"Failed: {reasons or 'none'}. The runs that finished are in {root}.")
    spreads = _spreads(runs, metric, task) if seeds > 1 else None
    from damoxing.verbs.compare import compare

    comparison = compare([paths[0] for paths in runs.values()], metric=metric, cost=cost, out=root / "compare",
                         n_resamples=n_resamples, spreads=spreads,
                         extra={"failed": failed, "ladder": {"config": str(config) if not isinstance(config, dict) else "(dict)",
                                "data_kind": kind, "rungs": [r.name for r in chosen], "seeds": seeds,
                                "seconds": time.perf_counter() - started}})
    return Ladder(path=root, runs=runs, failed=failed, comparison=comparison, seconds=time.perf_counter() - started)


# --------------------------------------------------------------------------- choosing rungs


def _data_kind(cfg, base_dir: Optional[Path]) -> tuple[str, Optional[str]]:
    """(data kind, task) of the config's data, as the rungs will read it: raw kind, text for a table with a text column."""
    from damoxing.data.pipeline import resolve_path
    from damoxing.data.sources import load_source
    from damoxing.data.text import is_text_column

    raw = load_source(resolve_path(cfg.data.source, base_dir), cfg.data.target,
                      resolve_path(cfg.data.labels, base_dir) if cfg.data.labels else None)
    kind = raw.kind
    if kind == "table":
        features = cfg.data.features or [c for c in raw.frame.columns if c != raw.target]
        if cfg.data.text is not None or any(is_text_column(raw.frame[c]) for c in features if c in raw.frame):
            kind = "text"
    if kind == "corpus":
        return kind, "language_modeling"
    if cfg.task is not None:
        return kind, cfg.task
    from damoxing.data.targets import infer_task

    if kind == "image":
        return kind, "classification" if raw.labels is not None else None
    if raw.target is not None and raw.frame is not None and raw.target in raw.frame:
        return kind, infer_task(raw.frame[raw.target])
    return kind, None


def _choose(names: Optional[list[str]], kind: str, task: Optional[str]) -> list[Rung]:
    """The rungs to train, in ladder order; an unknown name, or one that does not fit this data, is an error."""
    fits = [name for name, r in RUNGS.items() if kind in r.kinds and (task is None or task in r.tasks)]
    if names is None:
        chosen = [name for name in DEFAULT_RUNGS.get(kind, []) if name in fits]
    else:
        chosen = [name.strip() for name in names if name.strip()]
        for name in chosen:
            if name not in RUNGS:
                raise UserError(f"'{name}' is not a rung.{did_you_mean(name, RUNGS)} Rungs for this data ({kind}, {task}): "
                                f"{choices_text(fits)}; all rungs: {choices_text(RUNGS)}.")
            if name not in fits:
                raise UserError(f"Rung '{name}' does not fit this data ({kind} data, task {task}). Rungs that do: {choices_text(fits)}.")
        if len(set(chosen)) != len(chosen):
            raise UserError(f"--rungs names a rung twice ({', '.join(chosen)}); name each once (use --seeds for repeats).")
    if len(chosen) < 2:
        raise UserError(f"A ladder needs at least two rungs to compare; got {choices_text(chosen) if chosen else 'none'}. "
                        f"Rungs for this data ({kind}, {task}): {choices_text(fits)}.")
    return [RUNGS[name] for name in chosen]


def _ladder_path(out: str | Path | None, name: str) -> Path:
    """The ladder's new folder: never a run or inside one, never a folder that already holds files."""
    from damoxing.runs.folder import is_run

    if out is None:
        path = Path("runs") / f"ladder-{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        while path.exists():
            path = path.with_name(path.name + "-2")
        return path
    path = Path(out)
    if any(is_run(folder) for folder in (path, *path.resolve().parents)):
        raise UserError(f"--out '{out}' is a run folder or inside one; a ladder writes a new folder of its own. Choose a new folder.")
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UserError(f"--out '{out}' already exists and is not an empty folder; choose a new folder so nothing is overwritten.")
    return path


# --------------------------------------------------------------------------- training


def _base_config(cfg, base_dir: Optional[Path]) -> dict:
    """The config as a dict every rung starts from, with paths made absolute (the rungs train from a dict)."""
    from damoxing.data.pipeline import resolve_path

    data = cfg.model_dump(mode="json")
    for key in ("source", "labels"):
        value = data["data"].get(key)
        if value and not value.startswith("builtin:"):
            resolved = resolve_path(value, base_dir)
            data["data"][key] = str(Path(resolved).resolve()) if Path(resolved).exists() else value
    return data


def _rung_config(base: dict, rung: Rung, seed: int) -> dict:
    config = {**base, "model": dict(rung.model), "name": f"{base['name']}-{rung.name}"}
    config["train"] = {**base["train"], "seed": seed}
    return config


def _train_rungs(chosen: list[Rung], base: dict, seeds: int, root: Path, quiet: bool) -> tuple[dict[str, list[Path]], list[dict]]:
    """Train every rung with every seed; a failure is recorded and the ladder goes on."""
    from damoxing.verbs.train import train

    runs: dict[str, list[Path]] = {}
    failed: list[dict] = []
    was_quiet = is_quiet()  # train() keeps its own quiet setting to itself; the ladder's notes follow this one
    total = len(chosen) * seeds
    for i, (rung, k) in enumerate(((r, k) for r in chosen for k in range(seeds)), start=1):
        seed = base["train"]["seed"] + k
        path = root / (rung.name if seeds == 1 else f"{rung.name}-s{seed}")
        note(f"ladder: rung {i}/{total}: {rung.name} (seed {seed}) -> {path}")
        began = time.perf_counter()
        try:
            run = train(_rung_config(base, rung, seed), out=path, quiet=quiet or was_quiet)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001 - out of memory, a bad option for this data: reported, not fatal
            message = str(e).strip().splitlines()[0] if str(e).strip() else ""
            failed.append({"rung": rung.name, "seed": seed, "error": f"{type(e).__name__}: {message}"[:500],
                           "seconds": time.perf_counter() - began})
            warn(f"ladder: rung {rung.name} (seed {seed}) failed: {type(e).__name__}: {message}")
            continue
        runs.setdefault(rung.name, []).append(run.path)
    return runs, failed


def _spreads(runs: dict[str, list[Path]], metric: Optional[str], task: Optional[str]) -> dict[str, dict]:
    """Between-seed spread of the test metric per rung, keyed by the rung's first run (the one compared)."""
    from damoxing.runs.folder import read_json
    from damoxing.tasks import headline_metric

    out = {}
    for paths in runs.values():
        manifests = [read_json(p / "manifest.json") for p in paths]
        name = metric or headline_metric(task or manifests[0].get("task", ""))
        values = [(read_json(p / "metrics.json").get("test") or {}).get(name) for p in paths]
        values = [float(v) for v in values if isinstance(v, (int, float))]
        if not values:
            continue
        out[str(paths[0])] = {"seeds": [m.get("seed") for m in manifests], "values": values, "metric": name,
                              "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                              "min": min(values), "max": max(values)}
    return out
