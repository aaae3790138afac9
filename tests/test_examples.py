"""Every example under examples/ trains (with fewer epochs), beats its trivial baseline, and
`damoxing evaluate RUN` on the saved run reproduces its metrics.json exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import pickled_files

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.yaml"))
RECIPE = ("gpt-pretrain", "gpt-finetune")  # run in order by the `recipe` fixture
STANDALONE = [p for p in EXAMPLES if p.stem not in RECIPE]


@pytest.fixture(scope="module", params=STANDALONE, ids=[p.stem for p in STANDALONE])
def example_run(request, tmp_path_factory):
    """Each standalone example trained once (3 epochs), shared by the tests below."""
    from damoxing.api import train

    return train(request.param, out=tmp_path_factory.mktemp("examples") / request.param.stem, quiet=True,
                 overrides={"train.epochs": 3})


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    """examples/gpt-pretrain.yaml, then examples/gpt-finetune.yaml starting from its weights (fewer epochs)."""
    from damoxing.api import train

    folder, out = EXAMPLES[0].parent, tmp_path_factory.mktemp("recipe")
    pretrained = train(folder / "gpt-pretrain.yaml", out=out / "pretrain", quiet=True, overrides={"train.epochs": 3})
    tuned = train(folder / "gpt-finetune.yaml", out=out / "finetune", quiet=True,
                  overrides={"model.init_from": str(pretrained.path), "train.epochs": 4})
    return pretrained, tuned


def test_example_trains_and_beats_baseline(example_run):
    run = example_run
    task = run.config.task
    if task == "generation":
        return check_generation_example(run)
    metric = {"classification": "accuracy", "regression": "r2"}.get(task)
    if metric is None:
        pytest.skip(f"no headline check for task {task}")
    assert run.metrics["test"][metric] > run.metrics["baseline"]["test"][metric]


def test_pretrain_then_fine_tune_examples(recipe):
    pretrained, tuned = recipe
    assert pretrained.metrics["test"]["perplexity"] < pretrained.metrics["baseline"]["test"]["perplexity"]
    assert tuned.manifest["model"]["init_from"]["new"] == ["head.bias", "head.weight"]
    assert tuned.metrics["test"]["accuracy"] > tuned.metrics["baseline"]["test"]["accuracy"] + 0.3


def check_generation_example(run):
    """3 epochs are too few for a generator to beat the independent-pixel baseline's frechet_distance
    (the full examples do: see README), so check what 3 epochs must give: samples that are not one
    collapsed image, a sample grid, and, for a model with a reconstruction loss, a negative ELBO
    below that of reconstructing every image as the training mean."""
    test, baseline = run.metrics["test"], run.metrics["baseline"]["test"]
    assert test["diversity"] > 0.2, test
    kind = json.loads((run.path / "preprocessing.json").read_text())["schema"]["kind"]
    assert (run.path / "samples.png").is_file() == (kind == "image")  # grids of images; a table's rows come from `generate`
    if "recon" in test:
        assert test["loss"] < baseline["loss"]


def assert_evaluate_reproduces_metrics_json(path: Path) -> None:
    """`damoxing evaluate RUN --split S` == metrics.json's entries for S, for val and test: the same
    numbers, intervals (and their level), calibration, baselines and references, to the last bit."""
    from damoxing.tasks import one_split
    from damoxing.verbs.evaluate import evaluate

    saved = json.loads((path / "metrics.json").read_text())
    splits = [s for s in ("val", "test") if s in saved]
    assert "test" in splits
    for split in splits:
        again = evaluate(path, split=split)
        assert canonical(again) == canonical(one_split(saved, split)), split


def canonical(result: dict) -> str:
    """JSON text with sorted keys: floats compare bit for bit, NaN equals NaN."""
    return json.dumps(result, sort_keys=True)


def test_evaluate_reproduces_metrics_json(example_run):
    assert_evaluate_reproduces_metrics_json(example_run.path)
    assert pickled_files(example_run.path) == {}
    saved = json.loads((example_run.path / "metrics.json").read_text())
    if "test_ci" in saved:
        assert saved["test_ci_level"] == example_run.config.evaluate.confidence


def test_evaluate_reproduces_metrics_json_of_the_recipe(recipe):
    for run in recipe:  # a language model, then a text classifier on a table (its source relative to the config)
        assert_evaluate_reproduces_metrics_json(run.path)
        assert pickled_files(run.path) == {}


def test_templates_are_valid_configs():
    import yaml

    from damoxing.spec import load_config
    from damoxing.templates import TEMPLATES, template_text

    for name in TEMPLATES:
        load_config(yaml.safe_load(template_text(name)))


@pytest.mark.slow
def test_default_example_reaches_095_on_digits(tmp_path):
    """The README's main job: the default CNN on bundled digits images, full length."""
    from damoxing.api import train

    run = train(EXAMPLES[0].parent / "digits-cnn.yaml", out=tmp_path / "run", quiet=True)
    assert run.metrics["test"]["accuracy"] >= 0.95
    assert_evaluate_reproduces_metrics_json(run.path)
