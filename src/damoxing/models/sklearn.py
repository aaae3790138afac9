"""Traditional references from scikit-learn: logistic / ridge regression and histogram gradient boosting.

They answer the question every larger model must face: what does it buy over a traditional one?
`damoxing train` fits them (verbs/reference.py) on the same preprocessed splits a torch model of
the config would get, and saves the fitted estimator as ONNX (`model.onnx`, never a pickle), so a
reference run is read back, evaluated, predicted with and compared like any run:

    model: {type: sklearn, estimator: hist_gradient_boosting}      # or logistic_regression, ridge

Images and sequences are flattened to rows of features. Their "size" in the cost block is what
the fitted estimator holds: coefficients and intercepts, or the nodes of every tree (each a
feature index, a threshold and a value).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Optional

from pydantic import Field

from damoxing.config import ModelConfigBase
from damoxing.core.errors import ConfigError
from damoxing.models.registry import MODELS

ESTIMATORS = {  # name -> (task -> scikit-learn class name)
    "logistic_regression": {"classification": "LogisticRegression"},
    "ridge": {"regression": "Ridge"},
    "hist_gradient_boosting": {"classification": "HistGradientBoostingClassifier", "regression": "HistGradientBoostingRegressor"},
}


class SklearnConfig(ModelConfigBase):
    type: Literal["sklearn"] = "sklearn"
    estimator: Literal["logistic_regression", "ridge", "hist_gradient_boosting"] = Field(
        "hist_gradient_boosting", description="logistic_regression (classification), ridge (regression), hist_gradient_boosting (both)")
    max_iter: Optional[int] = Field(None, ge=1, description="logistic: solver iterations (default 1000); boosting: trees per class (default 100)")
    PRESETS: ClassVar[dict] = {}


@MODELS.register("sklearn")
class SklearnReference:
    """Not a torch module: `damoxing train` fits it with scikit-learn and saves it as ONNX."""

    config_class = SklearnConfig
    input_kinds = frozenset({"table", "image", "sequence"})
    fitted_by = "scikit-learn"  # create_model cannot build it; verbs/reference.py fits it

    @classmethod
    def from_config(cls, config: SklearnConfig, schema):
        raise ConfigError("model.type 'sklearn' is a scikit-learn estimator, not a torch model: `damoxing train` fits it "
                          "(and `damoxing ladder` uses it as a reference); its run holds model.onnx, which damoxing.load reads.")


def build_estimator(config: SklearnConfig, task: str, seed: int) -> Any:
    """The unfitted scikit-learn estimator for `task` (classification | regression)."""
    import sklearn.ensemble
    import sklearn.linear_model

    by_task = ESTIMATORS[config.estimator]
    if task not in by_task:
        other = [name for name, tasks in ESTIMATORS.items() if task in tasks]
        raise ConfigError(f"model.estimator '{config.estimator}' does not do {task}. Estimators for {task}: "
                          f"{', '.join(repr(n) for n in other)}.")
    name = by_task[task]
    if name == "LogisticRegression":
        return sklearn.linear_model.LogisticRegression(max_iter=config.max_iter or 1000)
    if name == "Ridge":
        return sklearn.linear_model.Ridge(alpha=1.0)
    module = sklearn.ensemble
    return getattr(module, name)(max_iter=config.max_iter or 100, random_state=seed, early_stopping=False)


def estimator_size(estimator) -> dict[str, Any]:
    """The cost block's size of a fitted estimator: params (a size proxy), what they are, and
    forward FLOPs per sample where they can be counted (2 per multiply-add, as for torch models)."""
    if hasattr(estimator, "coef_"):
        coef = estimator.coef_
        params = int(coef.size + getattr(estimator, "intercept_", 0).__array__().size)
        rows = coef.shape[0] if coef.ndim == 2 else 1
        return {"params": params, "params_kind": "coefficients and intercepts",
                "flops_per_sample": float(2 * coef.shape[-1] * rows),
                "flops_method": "2 x features x outputs (the linear map; the softmax/sigmoid is not counted, as for torch models)"}
    trees = [tree for iteration in estimator._predictors for tree in iteration]
    nodes = sum(len(tree.nodes) for tree in trees)
    leaf_depths = [tree.nodes["depth"][tree.nodes["is_leaf"] == 1] for tree in trees]
    mean_depth = float(sum(d.sum() for d in leaf_depths)) / max(1, sum(len(d) for d in leaf_depths))
    return {"params": int(nodes), "params_kind": "tree nodes (each a feature index, a threshold and a value)",
            "flops_per_sample": None, "comparisons_per_sample": float(len(trees) * mean_depth),
            "flops_method": f"not counted: a tree ensemble compares rather than multiplies (about {len(trees)} trees x "
                            f"{mean_depth:.1f} levels = {len(trees) * mean_depth:,.0f} comparisons per sample)"}
