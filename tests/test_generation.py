"""Generative runs end to end on the bundled digits: a VAE's negative ELBO falls and it writes sample
grids; a GAN does not collapse to one image; `generate` writes grids, arrays and latent walks; and
every misuse is one clear error, no traceback."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import write_yaml
from PIL import Image

DIGITS = {"source": "builtin:digits_images"}
VAE = {"name": "vae", "data": DIGITS, "model": {"type": "vae", "latent_dim": 8, "conv_channels": [16, 32]},
       "train": {"epochs": 4, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.003}, "sample_every": 2}}
GAN = {"name": "gan", "data": DIGITS, "model": {"type": "gan", "latent_dim": 16, "conv_channels": [16, 32]},
       "train": {"epochs": 4, "batch_size": 32, "optimizer": {"name": "adam", "lr": 0.002, "betas": [0.5, 0.999]},
                 "monitor": "val_frechet_distance", "sample_every": 0}}


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    from damoxing.api import train

    return train(VAE, out=tmp_path_factory.mktemp("runs") / "vae", quiet=True)


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory):
    from damoxing.api import train

    return train(GAN, out=tmp_path_factory.mktemp("runs") / "gan", quiet=True)


def test_vae_negative_elbo_falls_and_beats_reconstructing_the_mean_image(vae_run):
    assert vae_run.config.task == "generation"  # inferred from the model, although the digits have labels
    val_loss = [h["val_loss"] for h in vae_run.history]
    assert all(b < a for a, b in zip(val_loss, val_loss[1:])), val_loss
    assert val_loss[-1] < 0.75 * val_loss[0]
    for h in vae_run.history:  # the negative ELBO is reported with its two parts
        assert h["val_loss"] == pytest.approx(h["val_recon"] + h["val_kl"], rel=1e-4)
    assert vae_run.history[-1]["val_frechet_distance"] < vae_run.history[0]["val_frechet_distance"]
    test, baseline = vae_run.metrics["test"], vae_run.metrics["baseline"]["test"]
    assert test["loss"] < 0.9 * baseline["loss"] and baseline["kl"] == 0.0
    assert vae_run.metrics["reference"]["test"]["diversity"] == pytest.approx(1.0, abs=0.1)


def test_vae_writes_fixed_seed_sample_grids_during_and_after_training(vae_run):
    grids = {name: np.asarray(Image.open(vae_run.path / name)) for name in
             ("samples_epoch_2.png", "samples_epoch_4.png", "samples.png")}
    # 64 samples of 8x8, enlarged 4x: 8 cells of 32 px + 9 px of padding per side, grey
    assert all(g.shape == (8 * 33 + 1, 8 * 33 + 1) and g.dtype == np.uint8 for g in grids.values())
    assert not np.array_equal(grids["samples_epoch_2.png"], grids["samples_epoch_4.png"])  # training changed them
    assert np.array_equal(grids["samples_epoch_4.png"], grids["samples.png"])  # same seed, same (best = last) weights
    assert 20 < grids["samples.png"].mean() < 200  # de-normalized: digit strokes on dark, not all black or white


def test_gan_trains_without_collapsing_to_one_image(gan_run):
    history = gan_run.history
    assert {"train_d_loss", "train_g_loss", "val_d_loss", "val_g_loss", "val_diversity"} <= set(history[0])
    test = gan_run.metrics["test"]
    assert test["diversity"] > 0.3, test  # a collapsed generator scores ~0
    assert {"d_loss", "g_loss", "frechet_distance"} <= set(test)


def test_generate_grid_arrays_and_latent_walk(cli, vae_run, gan_run, tmp_path):
    result = cli("generate", gan_run.path, "--n", 10, "--seed", 3, "--out", tmp_path / "a.npz")
    assert result.code == 0, result.err
    assert result.last_line == str(tmp_path / "a.npz")
    images = np.load(tmp_path / "a.npz")["images"]
    assert images.shape == (10, 1, 8, 8) and images.dtype == np.float32
    assert 2 < images.mean() < 10  # the digits' own units (0-16, mean about 4.9), not standardized values
    flat = images.reshape(10, -1)
    distances = np.linalg.norm(flat[:, None] - flat[None], axis=-1)[np.triu_indices(10, 1)]
    assert distances.min() > 1.0  # ten different images
    cli("generate", gan_run.path, "--n", 10, "--seed", 3, "--out", tmp_path / "b.npz")
    assert np.array_equal(np.load(tmp_path / "b.npz")["images"], images)  # same seed, same images

    assert cli("generate", vae_run.path, "--n", 10, "--out", tmp_path / "grid.png").code == 0
    assert np.asarray(Image.open(tmp_path / "grid.png")).shape == (3 * 33 + 1, 4 * 33 + 1)  # 10 cells: 3 rows of 4
    assert cli("generate", vae_run.path, "--n", 7, "--interpolate", "--out", tmp_path / "walk.png").code == 0
    assert np.asarray(Image.open(tmp_path / "walk.png")).shape == (33 + 1, 7 * 33 + 1)  # one row


def test_evaluate_a_generative_run_reproduces_its_test_metrics(cli, vae_run):
    result = cli("evaluate", vae_run.path, "--json")
    assert result.code == 0, result.err
    evaluated = json.loads(result.out)
    saved = json.loads((vae_run.path / "metrics.json").read_text())
    assert evaluated["metrics"] == pytest.approx(saved["test"])
    assert evaluated["baseline"] == pytest.approx(saved["baseline"]["test"])


def test_evaluate_a_generative_run_on_a_file_of_images(cli, gan_run, tmp_path):
    from sklearn.datasets import load_digits

    np.savez(tmp_path / "digits.npz", x=load_digits().images[:300, None])  # no labels needed
    result = cli("evaluate", gan_run.path, "--data", tmp_path / "digits.npz", "--json")
    assert result.code == 0, result.err
    evaluated = json.loads(result.out)
    assert {"loss", "d_loss", "g_loss", "frechet_distance", "diversity"} <= set(evaluated["metrics"])
    assert evaluated["reference"]["diversity"] == pytest.approx(1.0, abs=0.15)


@pytest.fixture(scope="module")
def classifier_run(tmp_path_factory):
    from damoxing.api import train

    config = {"name": "cls", "data": DIGITS, "model": {"type": "linear"}, "train": {"epochs": 1}}
    return train(config, out=tmp_path_factory.mktemp("runs") / "cls", quiet=True)


@pytest.mark.parametrize("case, pattern", [
    ("not_generative", "is a classification run"),
    ("bad_extension", "must end in .png"),
    ("interpolate_gan", "--interpolate needs"),
    ("no_out", "Say where to write"),
])
def test_generate_misuse_is_one_clear_error(cli, case, pattern, classifier_run, gan_run, tmp_path):
    args = {
        "not_generative": [classifier_run.path, "--out", tmp_path / "x.png"],
        "bad_extension": [gan_run.path, "--out", tmp_path / "x.jpg"],
        "interpolate_gan": [gan_run.path, "--interpolate", "--out", tmp_path / "x.png"],
        "no_out": [gan_run.path],
    }[case]
    result = cli("generate", *args)
    assert result.code == 2 and pattern in result.err and "Traceback" not in result.err, result.err
    assert not list(tmp_path.iterdir())  # nothing written


def test_predict_on_a_generative_run_points_to_generate(cli, gan_run, tmp_path):
    np.savez(tmp_path / "in.npz", x=np.zeros((2, 1, 8, 8)))
    result = cli("predict", gan_run.path, tmp_path / "in.npz")
    assert result.code == 2 and "damoxing generate" in result.err


def test_a_classification_task_with_a_generative_model_is_refused(cli, tmp_path):
    config = write_yaml(tmp_path / "c.yaml", {**VAE, "task": "classification"})
    result = cli("train", config, "--out", tmp_path / "run")
    assert result.code == 2 and "does 'generation'" in result.err


def test_a_vae_models_a_table_with_its_label_column(tmp_path, cli):
    from damoxing.api import train

    config = {"name": "t", "data": {"source": "builtin:iris"}, "model": {"type": "vae", "size": "tiny"},
              "train": {"epochs": 3, "batch_size": 16, "optimizer": {"name": "adam", "lr": 0.01}}}
    run = train(config, out=tmp_path / "run", quiet=True)
    schema = json.loads((run.path / "preprocessing.json").read_text())["schema"]
    assert schema["input_shape"] == [8] and schema["task"] == "generation"  # the 4 measurements and the species one-hot (3 + <other>)
    assert run.metrics["test"]["loss"] < run.metrics["baseline"]["test"]["loss"]
    assert not (run.path / "samples.png").exists()  # grids are for images
    result = cli("generate", run.path, "--out", tmp_path / "x.png")
    assert result.code == 2 and "must end in .csv or .parquet" in result.err


@pytest.mark.slow
@pytest.mark.parametrize("example", ["vae-digits", "gan-digits"])
def test_full_examples_beat_drawing_pixels_independently(example, tmp_path):
    """At full length both examples' samples match the test digits' statistics better than the
    independent-pixel baseline (frechet_distance ~6 against ~13; see README)."""
    from pathlib import Path

    from damoxing.api import train

    run = train(Path(__file__).resolve().parents[1] / "examples" / f"{example}.yaml", out=tmp_path / "run", quiet=True)
    test, baseline = run.metrics["test"], run.metrics["baseline"]["test"]
    assert test["frechet_distance"] < 0.7 * baseline["frechet_distance"], (test, baseline)
    assert test["diversity"] > 0.5
