"""Quiet is a setting of one block of work, never left behind for the next call."""

from __future__ import annotations

import threading

import pytest

from damoxing.core.console import is_quiet, note, progress_bar, quiet, warn


def test_quiet_silences_notes_in_its_block_only_and_nests(capsys):
    with quiet(True):
        note("hidden")
        warn("shown")  # a warning says something about the result: never silenced
        assert progress_bar() is None
        with quiet(False):
            note("inner")
        note("hidden again")
    note("after")
    err = capsys.readouterr().err
    assert "hidden" not in err and "warning: shown" in err and "inner" in err and "after" in err


def test_quiet_ends_with_its_block_on_an_error_and_stays_in_its_thread():
    with pytest.raises(RuntimeError):
        with quiet(True):
            raise RuntimeError("boom")
    assert not is_quiet()
    seen = []
    with quiet(True):
        thread = threading.Thread(target=lambda: seen.append(is_quiet()))
        thread.start()
        thread.join()
    assert seen == [False]  # another thread (a server's request) is not silenced by this one


def test_a_quiet_train_call_then_a_normal_one_prints_notes_again(capsys, tmp_path):
    from damoxing.api import train
    from damoxing.core.errors import ConfigError

    config = {"data": {"source": "builtin:iris"}, "model": {"type": "mlp", "size": "tiny"}, "train": {"epochs": 1}}
    train(config, out=tmp_path / "quiet", quiet=True)
    assert "data:" not in capsys.readouterr().err
    note("a note after the quiet call")
    assert "a note after the quiet call" in capsys.readouterr().err
    with pytest.raises(ConfigError):
        train({**config, "model": {"type": "nope"}}, out=tmp_path / "bad", quiet=True)
    assert not is_quiet()
    train(config, out=tmp_path / "loud")
    err = capsys.readouterr().err
    assert "data: " in err and "saved run to" in err
