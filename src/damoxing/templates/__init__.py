"""Starter configs written by `damoxing init [TEMPLATE]`."""

from __future__ import annotations

from importlib.resources import files

from damoxing.core.errors import UserError, choices_text, did_you_mean

TEMPLATES = {
    "digits-cnn": "CNN on the bundled 8x8 digits images (the default main job)",
    "digits-mlp": "seed 002's MLP (one hidden layer of 128, SGD) on the digits table",
    "tabular": "an MLP on your own CSV/Parquet table (classification or regression)",
    "diabetes-regression": "seed 004's dense regression (hidden 10, ReLU, Adam, MSE) on diabetes",
    "text-classification": "fine-tune the bundled MiniLM encoder (LoRA) on a text column of your CSV/Parquet table",
    "language-model": "a GPT-style language model on your .txt corpus; then `damoxing generate`",
    "vae-digits": "a variational autoencoder generating 8x8 digits (loss = negative ELBO; sample grids)",
    "gan-digits": "a DCGAN generating 8x8 digits (two players, two optimizers; sample grids)",
    "synthetic-table": "a vae on a table (breast_cancer, or yours); then `damoxing generate --out rows.csv` with a quality report",
    "tune-digits": "a hyperparameter search (optuna) over seed 002's MLP on digits: `damoxing tune`",
}


def template_text(name: str) -> str:
    if name not in TEMPLATES:
        raise UserError(f"Unknown template '{name}'.{did_you_mean(name, TEMPLATES)} Templates: {choices_text(TEMPLATES)}.")
    return files("damoxing.templates").joinpath(f"{name}.yaml").read_text()
