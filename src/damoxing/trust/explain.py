"""Attributions with captum: how much each input moved the model's output for one row.

    attributions = attribute(model, inputs, kind="table", method="integrated_gradients", target=classes,
                             baseline=baseline_row, groups=column_index)

Kinds and what an attribution is there:
  table     (N, F) model inputs -> (N, G) one value per ORIGINAL column: the F preprocessed inputs
            (a one-hot group, an imputed number) are summed back to the G columns they came from
            (`groups[j]` = the column of input j). The baseline is a row of missing values passed
            through the run's preprocessing: numbers at their training mean, categories at their
            most frequent value - a point on the data, not the all-zero vector.
  image     (N, C, H, W) -> (N, C, H, W); the baseline is a black image through the preprocessing.
  sequence  (N, T, F) -> (N, T, F); the baseline is the training mean (0 after standardizing).
  text      (N, T) token ids -> (N, T): attributions on the token embedding layer
            (LayerIntegratedGradients), summed over the embedding; padding is never attributed
            (its positions stay padding in the baseline and come out exactly 0); the baseline
            puts the padding token at every real position and keeps special tokens ([CLS], [SEP]).

The output explained is the logit of `target` (the predicted class by default) for a classifier,
the prediction for a regressor. Integrated gradients satisfy completeness: the attributions of a
row sum to f(x) - f(baseline). The gap, the convergence delta, is the error of the path integral;
it is computed for every row and rows whose gap is not small get more integration steps
(STEPS), and the rows that still do not converge are reported, never hidden.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch

from damoxing.core.errors import ConfigError, choices_text

METHODS: dict[str, str] = {
    "integrated_gradients": "integrated gradients from a baseline (captum IntegratedGradients; LayerIntegratedGradients on the token embedding for text); sums to f(x) - f(baseline)",
    "saliency": "the gradient's magnitude |d output / d input| at the input (captum Saliency); unsigned, no baseline",
    "occlusion": "the output's drop when a sliding window of the input is set to the baseline (captum Occlusion)",
    "feature_ablation": "the output's drop when one feature (a column, a patch, a token) is set to the baseline (captum FeatureAblation)",
}
APPLIES: dict[str, tuple[str, ...]] = {
    "table": ("integrated_gradients", "saliency", "feature_ablation"),
    "image": ("integrated_gradients", "saliency", "occlusion", "feature_ablation"),
    "sequence": ("integrated_gradients", "saliency", "occlusion", "feature_ablation"),
    "text": ("integrated_gradients", "feature_ablation"),
}
WHY_NOT: dict[tuple[str, str], str] = {
    ("table", "occlusion"): "a sliding window over table columns mixes unrelated columns (feature_ablation sets one column at a time)",
    ("text", "saliency"): "token ids have no gradient (integrated_gradients works on the token embeddings)",
    ("text", "occlusion"): "windows of tokens are what feature_ablation does one token at a time",
}
STEPS = (50, 200, 1000)  # integration steps tried in turn for rows whose convergence delta is not small
RTOL, ATOL = 0.01, 1e-3  # converged: |delta| <= RTOL * |f(x) - f(baseline)| + ATOL
INTERNAL_ROWS = 4096  # (row, step) pairs per forward pass inside captum: bounds memory


@dataclass
class Attributions:
    """Attributions of N rows and the numbers needed to check them.

    values: (N, G) table (per original column) | (N, C, H, W) image | (N, T, F) sequence | (N, T) text.
    output, baseline_output: (N,) the explained output at the input and at the baseline (for text:
        at the start of the path, the baseline's embeddings under the row's own padding mask).
    delta: (N,) sum of a row's attributions - (output - baseline_output); None for methods without one.
    steps: (N,) integration steps each row ended with (integrated gradients), else None.
    """

    kind: str
    method: str
    target: np.ndarray
    values: np.ndarray
    output: np.ndarray
    baseline_output: np.ndarray
    delta: Optional[np.ndarray] = None
    steps: Optional[np.ndarray] = None
    feature_names: Optional[list[str]] = None
    mask: Optional[np.ndarray] = None  # text: (N, T) True at real tokens
    atol: float = ATOL  # the absolute part of the convergence tolerance, in the output's units (ATOL x a regression's scale)

    @property
    def converged(self) -> Optional[np.ndarray]:
        """(N,) bool: the convergence delta is small (see RTOL, ATOL); None for methods without a delta."""
        if self.delta is None:
            return None
        return np.abs(self.delta) <= RTOL * np.abs(self.output - self.baseline_output) + self.atol

    def delta_summary(self) -> Optional[dict]:
        """The convergence delta in numbers a reader can judge: absolute and relative to |f(x) - f(baseline)|."""
        if self.delta is None:
            return None
        gap = np.abs(self.output - self.baseline_output)
        relative = np.abs(self.delta) / np.maximum(gap, 1e-12)
        converged = self.converged
        return {"max_abs": float(np.abs(self.delta).max(initial=0.0)), "median_abs": float(np.median(np.abs(self.delta))) if len(self.delta) else 0.0,
                "median_relative": float(np.median(relative)) if len(relative) else 0.0,
                "p95_relative": float(np.quantile(relative, 0.95)) if len(relative) else 0.0,
                "rows_converged": int(converged.sum()), "rows": int(len(converged)),
                "steps_used": sorted({int(s) for s in self.steps}) if self.steps is not None else None,
                "tolerance": f"|delta| <= {RTOL} |f(x) - f(baseline)| + {self.atol:.3g}"}


@dataclass
class Explainer:
    """What `attribute` needs to know about one model: how to call it, and its inputs' baseline.

    forward: inputs -> outputs (N, K) (logits or regression outputs), in eval mode.
    baseline: a (1, ...) baseline input (dense kinds) or a function ids -> baseline ids (text).
    groups: table: (F,) index of the original column of every model input.
    embedding: text: model -> its token embedding module (looked up on randomized copies too).
    special_ids: text: ids kept in the baseline ([CLS], [SEP], ...).
    """

    model: torch.nn.Module
    kind: str
    baseline: Optional[torch.Tensor]  # dense kinds: (1, ...); text: None (see text_baseline)
    groups: Optional[np.ndarray] = None
    feature_names: Optional[list[str]] = None
    embedding: Optional[Callable[[torch.nn.Module], torch.nn.Module]] = None
    output_scale: float = 1.0  # regression: model units -> target units (value * scale + offset)
    output_offset: float = 0.0
    extra: dict = field(default_factory=dict)


def check_method(method: str, kind: str, family: str) -> None:
    """A method must be known and apply to the kind of data; else a ConfigError listing those that do."""
    if method not in METHODS:
        raise ConfigError(f"Unknown explain method '{method}'. Methods: {choices_text(METHODS)}.")
    if kind not in APPLIES:
        raise ConfigError(f"explain does not cover {kind} data (model '{family}'); it explains tables, images, numeric sequences and texts.")
    if method not in APPLIES[kind]:
        why = WHY_NOT.get((kind, method))
        raise ConfigError(f"Method '{method}' does not apply to model '{family}' on {kind} data" + (f": {why}." if why else ".")
                          + f" Methods that do: {choices_text(APPLIES[kind])}.")


# --------------------------------------------------------------------------- the entry point


def attribute(explainer: Explainer, x: torch.Tensor, target: torch.Tensor, method: str, model: Optional[torch.nn.Module] = None) -> Attributions:
    """Attributions of rows `x` for output `target` (N,) by `method`; `model` overrides the explainer's (the sanity check's copy)."""
    model = (model or explainer.model).eval()
    if explainer.kind == "text":
        values, start, has_delta, steps = _text(explainer, model, x, target, method)
    else:
        values, start, has_delta, steps = _dense(explainer, model, x, target, method)
    out = _target_outputs(model, x, target)
    scale = explainer.output_scale
    delta = values.reshape(len(x), -1).sum(1) - (out - start) if has_delta else None
    values = values * scale
    offset = explainer.output_offset
    result = Attributions(kind=explainer.kind, method=method, target=target.numpy(), values=values, output=out * scale + offset,
                          baseline_output=start * scale + offset, delta=None if delta is None else delta * scale, steps=steps,
                          feature_names=explainer.feature_names, atol=ATOL * scale)
    if explainer.kind == "table":
        result.values = sum_groups(values, explainer.groups) if method != "feature_ablation" else values
    if explainer.kind == "text":
        result.mask = (x != explainer.extra["pad_id"]).numpy()
    return result


def sum_groups(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """(N, F) attributions of model inputs -> (N, G) per original column: signed sums within each column's inputs.

    Completeness survives (a row's total is unchanged); summing |values| instead would count a
    one-hot group's opposite pulls twice."""
    out = np.zeros((values.shape[0], int(groups.max()) + 1), dtype=np.float64)
    np.add.at(out.T, groups, values.T.astype(np.float64))
    return out


@torch.no_grad()
def _target_outputs(model, x: torch.Tensor, target: torch.Tensor, batch: int = 4096) -> np.ndarray:
    outs = [model(x[i : i + batch]).float() for i in range(0, len(x), batch)]
    out = torch.cat(outs) if outs else torch.empty(0, 1)
    return out.gather(1, target[:, None])[:, 0].double().numpy()


# --------------------------------------------------------------------------- dense inputs (table, image, sequence)


def _dense(explainer: Explainer, model, x: torch.Tensor, target: torch.Tensor, method: str):
    """(values (N, ...) in model-input space, baseline output (N,), whether the method has a convergence delta, steps or None)."""
    from captum.attr import FeatureAblation, IntegratedGradients, Occlusion, Saliency

    baseline = explainer.baseline.to(x.dtype)
    start = _target_outputs(model, baseline.expand(len(x), *baseline.shape[1:]), target)
    if method == "integrated_gradients":
        ig = IntegratedGradients(model)

        def run(rows: np.ndarray, steps: int) -> np.ndarray:
            attr = ig.attribute(x[rows], baselines=baseline, target=target[rows], n_steps=steps, method="gausslegendre",
                                internal_batch_size=max(steps, _internal_rows(x)))
            return attr.detach().double().numpy()

        values, steps = _until_converged(run, model, x, target, start)
        return values, start, True, steps
    if method == "saliency":
        values = Saliency(model).attribute(x.clone().requires_grad_(), target=target, abs=True)
        return values.detach().double().numpy(), start, False, None
    if method == "occlusion":
        window, stride = occlusion_window(tuple(x.shape[1:]))
        values = Occlusion(model).attribute(x, sliding_window_shapes=window, strides=stride, baselines=baseline, target=target,
                                            perturbations_per_eval=64)
        return values.detach().double().numpy(), start, False, None
    mask = ablation_mask(explainer, tuple(x.shape[1:]))
    n_features = int(mask.max()) + 1
    values = FeatureAblation(model).attribute(x, baselines=baseline, target=target, feature_mask=mask,
                                              perturbations_per_eval=min(n_features, max(1, 4096 // max(1, len(x)))))
    values = values.detach().double().numpy()
    if explainer.kind == "table":  # each column's value is repeated on its inputs: keep one per column
        first = [int(np.flatnonzero(explainer.groups == g)[0]) for g in range(n_features)]
        values = values[:, first]
    return values, start, False, None


def _internal_rows(x: torch.Tensor) -> int:
    """(row, step) pairs per captum forward: ~INTERNAL_ROWS for small rows, fewer for large images."""
    per_row = max(1, int(np.prod(x.shape[1:])))
    return max(1, min(INTERNAL_ROWS, (1 << 24) // per_row))


def _until_converged(run: Callable[[np.ndarray, int], np.ndarray], model, x, target, start: np.ndarray):
    """Integrate every row with STEPS[0] steps, then again with more steps only the rows whose delta is not small."""
    out = _target_outputs(model, x, target)
    rows = np.arange(len(x))
    values = run(rows, STEPS[0])
    steps = np.full(len(x), STEPS[0], dtype=np.int64)
    for n_steps in STEPS[1:]:
        delta = values.reshape(len(x), -1).sum(1) - (out - start)
        bad = np.flatnonzero(np.abs(delta) > RTOL * np.abs(out - start) + ATOL)
        if len(bad) == 0:
            break
        values[bad] = run(bad, n_steps)
        steps[bad] = n_steps
    return values, steps


def occlusion_window(shape: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Sliding window and stride for Occlusion: a quarter of the image side (2x2 on 8x8 digits), half-window strides;
    for sequences (T, F) a window of ~T/8 steps across every feature."""
    if len(shape) == 3:  # (C, H, W)
        c, h, w = shape
        side = max(1, min(h, w) // 4)
        step = max(1, side // 2)
        return (c, side, side), (c, step, step)
    t, f = shape
    side = max(1, t // 8)
    return (side, f), (max(1, side // 2), f)


def ablation_mask(explainer: Explainer, shape: tuple[int, ...]) -> torch.Tensor:
    """FeatureAblation's feature ids (1, *shape): a table's original columns, an image's square patches
    (shared across channels; ~8 per side), a sequence's time steps."""
    if explainer.kind == "table":
        return torch.as_tensor(explainer.groups, dtype=torch.long)[None, :]
    if explainer.kind == "image":
        c, h, w = shape
        side = max(1, min(h, w) // 8)
        rows = torch.arange(h) // side
        cols = torch.arange(w) // side
        patch = rows[:, None] * (int(cols.max()) + 1) + cols[None, :]
        return patch.expand(c, h, w)[None].contiguous()
    t, f = shape
    return torch.arange(t)[:, None].expand(t, f)[None].contiguous()


# --------------------------------------------------------------------------- text


def _text(explainer: Explainer, model, ids: torch.Tensor, target: torch.Tensor, method: str):
    """Token attributions (N, T) on the embedding layer, the path start's output (N,), whether there is a delta, steps."""
    from captum.attr import FeatureAblation, LayerIntegratedGradients

    from damoxing.models.protocols import CutsPadding

    if isinstance(model, CutsPadding):  # attributions swap in embeddings of the full length: no dynamic padding
        model.cut_padding = False
    base_ids = text_baseline(ids, explainer.extra["pad_id"], explainer.extra["special_ids"])
    layer = explainer.embedding(model)
    start = path_start(model, layer, ids, base_ids, target)
    if method == "feature_ablation":  # a token set to padding is a token removed: the mask drops it
        values = FeatureAblation(model).attribute(ids, baselines=base_ids, target=target,
                                                  feature_mask=torch.arange(ids.shape[1])[None].expand_as(ids).contiguous(),
                                                  perturbations_per_eval=8)
        values = values.double().numpy() * (ids != explainer.extra["pad_id"]).numpy()
        return values, start, False, None
    lig = LayerIntegratedGradients(model, layer)

    def run(rows: np.ndarray, steps: int) -> np.ndarray:
        attr = lig.attribute(ids[rows], baselines=base_ids[rows], target=target[rows], n_steps=steps, method="gausslegendre",
                             internal_batch_size=max(steps, 256))
        return attr.sum(-1).detach().double().numpy()

    values, steps = _until_converged(run, model, ids, target, start)
    return values, start, True, steps


def text_baseline(ids: torch.Tensor, pad_id: int, special_ids: set[int]) -> torch.Tensor:
    """Padding at every real token, special tokens kept: the same length and mask as the text, no words."""
    keep = torch.zeros_like(ids, dtype=torch.bool)
    for special in special_ids:
        keep |= ids == special
    return torch.where(keep, ids, torch.full_like(ids, pad_id))


@torch.no_grad()
def path_start(model, layer: torch.nn.Module, ids: torch.Tensor, base_ids: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """f at the start of LayerIntegratedGradients' path: the baseline's embeddings, but the row's own padding mask.

    captum runs the model on the real ids and swaps in interpolated embeddings, so masks, RNN lengths
    and the last-token index all come from the real ids; its own convergence delta instead evaluates
    f(baseline ids), another text with another mask, and is wrong for a padding baseline."""
    outs = []
    for i in range(0, len(ids), 256):
        embedded = layer(base_ids[i : i + 256])
        handle = layer.register_forward_hook(lambda module, inputs, output: embedded)
        try:
            outs.append(model(ids[i : i + 256]).float())
        finally:
            handle.remove()
    out = torch.cat(outs) if outs else torch.empty(0, 1)
    return out.gather(1, target[:, None])[:, 0].double().numpy()


# --------------------------------------------------------------------------- the sanity check


def randomized_copy(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """A copy of `model` with every weight drawn afresh (Adebayo et al. 2018, "Sanity checks for saliency maps").

    Modules re-draw themselves (`reset_parameters`); parameters a module holds directly without
    one (a learned [CLS] vector, learned positions) are redrawn from a normal with their own std."""
    clone = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in clone.modules():
            if hasattr(module, "reset_parameters") and callable(module.reset_parameters):
                module.reset_parameters()
            else:
                for p in module.parameters(recurse=False):
                    with torch.no_grad():
                        p.normal_(0.0, float(p.detach().float().std()) if p.numel() > 1 else 0.02)
    return clone.eval()


def rank_correlations(real: np.ndarray, other: np.ndarray, mask: Optional[np.ndarray] = None) -> dict:
    """Spearman rank correlation of |attributions|: the median over rows (each row's features ranked),
    and global (the mean |attribution| per feature; for text, every real token pooled)."""
    from scipy.stats import spearmanr

    a, b = np.abs(real.reshape(len(real), -1)), np.abs(other.reshape(len(other), -1))
    rows = []
    for i in range(len(a)):
        keep = mask[i].reshape(-1) if mask is not None else slice(None)
        x, y = a[i][keep], b[i][keep]
        if len(x) > 2 and x.std() > 0 and y.std() > 0:
            rows.append(float(spearmanr(x, y).statistic))
    if mask is not None:
        flat = mask.reshape(len(mask), -1)
        global_x, global_y = a[flat], b[flat]
    else:
        global_x, global_y = a.mean(0), b.mean(0)
    usable = len(global_x) > 2 and global_x.std() > 0 and global_y.std() > 0
    return {"row_median": float(np.median(rows)) if rows else None,
            "global": float(spearmanr(global_x, global_y).statistic) if usable else None}


def sanity_check(explainer: Explainer, x: torch.Tensor, target: torch.Tensor, method: str, real: np.ndarray,
                 mask: Optional[np.ndarray] = None, draws: int = 3, seed: int = 0) -> dict:
    """The same attributions from `draws` copies of the model with re-initialized weights, and their rank
    correlation with the real ones (`real`: the attributions of rows `x`): near 0 says the attributions
    depend on what the model learned."""
    per_draw = []
    for d in range(draws):
        fake = attribute(explainer, x, target, method, model=randomized_copy(explainer.model, seed + d))
        per_draw.append(rank_correlations(real, fake.values, mask))
    global_values = [p["global"] for p in per_draw if p["global"] is not None]
    row_values = [p["row_median"] for p in per_draw if p["row_median"] is not None]
    value = float(np.mean(global_values)) if global_values else None
    return {"draws": draws, "rows": int(len(x)), "global_spearman": value,
            "row_spearman_median": float(np.mean(row_values)) if row_values else None, "per_draw": per_draw,
            "passed": None if value is None else bool(value < 0.5),
            "reading": "near 0: the attributions depend on the learned weights; above 0.5 they look much like an untrained "
                       "model's and say more about the input than about the model"}


# --------------------------------------------------------------------------- building an Explainer


TOKEN_EMBEDDINGS: dict[str, Callable[[torch.nn.Module], torch.nn.Module]] = {
    "rnn": lambda model: model.embed,
    "transformer": lambda model: model.embed,
    "gpt": lambda model: model.wte,
    "pretrained": lambda model: model.backbone.get_input_embeddings(),  # BERT's word_embeddings, through a peft wrapper too
}


def table_columns(tabular) -> tuple[list[str], np.ndarray]:
    """(original column names, (F,) index of the column each model input comes from) of a fitted TabularPreprocessor:
    a numeric or ordinal column is one input, a one-hot column one per kept category plus its <other> input, a date one per part."""
    names, index = [], []
    for g, column in enumerate(tabular.columns_):
        names.append(column["name"])
        index += [g] * tabular.column_width(column)
    if len(index) != len(tabular.feature_names_out_):
        raise RuntimeError("the table's preprocessing does not map its inputs back to columns one to one")
    return names, np.asarray(index)


def table_baseline(preprocessing, columns: list[str]) -> torch.Tensor:
    """(1, F): a row of missing values through the run's preprocessing (numbers imputed, categories at their mode)."""
    import pandas as pd

    return torch.as_tensor(preprocessing.transform_inputs(pd.DataFrame({c: [np.nan] for c in columns})))


def special_token_ids(codec) -> set[int]:
    """Ids of a tokenizer's special tokens other than padding and <unk> ([CLS], [SEP], <eos>, ...), kept in a text baseline:
    those it declares special, and those its post-processor puts around every text (what encoding '' gives)."""
    decoder = codec.tokenizer_.get_added_tokens_decoder()
    declared = {int(i) for i, token in decoder.items() if getattr(token, "special", False)}
    template = set(codec.tokenizer_.encode("", add_special_tokens=True).ids)
    return (declared | template) - {codec.pad_id_, codec.unk_id_}  # an unknown word is still a word of the text


def make_explainer(model: torch.nn.Module, family: str, preprocessing) -> Explainer:
    """What `attribute` needs for a run's model and fitted preprocessing (kinds: table, image, sequence, text)."""
    schema = preprocessing.schema
    scaler = preprocessing.target_scaler
    scale, offset = (float(scaler.std_), float(scaler.mean_)) if scaler is not None else (1.0, 0.0)
    if schema.kind == "table":
        names, groups = table_columns(preprocessing.inputs)
        return Explainer(model=model, kind="table", baseline=table_baseline(preprocessing, names), groups=groups,
                         feature_names=names, output_scale=scale, output_offset=offset)
    if schema.kind == "image":
        blank = np.zeros((1, *schema.input_shape), dtype=np.float32)
        return Explainer(model=model, kind="image", baseline=torch.as_tensor(preprocessing.inputs.transform(blank)), output_scale=scale,
                         output_offset=offset)
    if schema.kind == "sequence":
        return Explainer(model=model, kind="sequence", baseline=torch.zeros((1, *schema.input_shape)), output_scale=scale,
                         output_offset=offset)
    if schema.kind == "text":
        if family not in TOKEN_EMBEDDINGS:
            raise ConfigError(f"explain finds the token embedding of {choices_text(TOKEN_EMBEDDINGS)} text models; '{family}' is not one of them.")
        return Explainer(model=model, kind="text", baseline=None, embedding=TOKEN_EMBEDDINGS[family], output_scale=scale, output_offset=offset,
                         extra={"pad_id": int(schema.pad_id), "special_ids": special_token_ids(preprocessing.inputs)})
    raise ConfigError(f"explain does not cover {schema.kind} data; it explains tables, images, numeric sequences and texts.")
