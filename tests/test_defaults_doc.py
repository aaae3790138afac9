"""docs/defaults.md is the one list of defaults: every config key of the sections it covers is on
it, and the automatic table settings it states are the ones training/defaults.py uses."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from damoxing import config as sections
from damoxing.training import defaults

DOC = Path(__file__).resolve().parents[1] / "docs" / "defaults.md"
README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.parametrize("section", [
    sections.DataConfig, sections.SplitConfig, sections.PreprocessConfig, sections.TokenizerConfig, sections.TrainConfig,
    sections.OptimizerConfig, sections.ScheduleConfig, sections.EarlyStoppingConfig, sections.EvaluateConfig,
    sections.CostConfig, sections.TrackingConfig, sections.LoaderConfig,
], ids=lambda c: c.__name__)
def test_every_key_is_documented(section):
    text = DOC.read_text()
    missing = [name for name in section.model_fields if not re.search(rf"`[^`\n]*\b{name}\b[^`\n]*`", text)]
    assert not missing, f"{section.__name__} keys missing from docs/defaults.md: {missing}"


def test_the_automatic_table_settings_are_the_code_s():
    text = DOC.read_text()
    for phrase in [f"N / {defaults.ROWS_PER_STEP}", f"between {defaults.MIN_BATCH} and {defaults.MAX_BATCH}",
                   f"{defaults.BASE_LR:g} at batch {defaults.BASE_BATCH}", f"at most {defaults.MAX_LR:g}",
                   f"about {defaults.STEP_BUDGET:,} optimizer steps", f"between {defaults.MIN_EPOCHS} and {defaults.MAX_EPOCHS} epochs",
                   f"between {defaults.MIN_PATIENCE} and {defaults.MAX_PATIENCE} |"]:
        assert phrase in text, phrase
    assert f"| {defaults.auto_batch_size(20_000)} | {defaults.auto_batch_size(327_000)} |" in text
    assert f"| {defaults.auto_epochs(124, 32)} | {defaults.auto_epochs(20_000, 256)} | {defaults.auto_epochs(327_000, 512)} |" in text
    assert f"| {defaults.auto_patience(300)} | {defaults.auto_patience(127)} | {defaults.auto_patience(20)} |" in text


def test_readme_links_the_defaults_page():
    assert "docs/defaults.md" in README.read_text()
