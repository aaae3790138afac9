"""Every CLI usage mistake is one paragraph and exit 2, never a traceback (issue 11, item 4).

The test walks the real command tree, so a verb or option added later is covered without editing it.
"""

from __future__ import annotations

import enum
import typing

import pytest
import typer

from damoxing import cli


def _commands():
    root = typer.main.get_command(cli.app)
    return sorted(root.commands.items())


def _run(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out + captured.err


def _bad_values(param) -> list[str]:
    """A value of the wrong kind for a typed option: a non-number for numbers, an unknown choice."""
    annotation = param.type_descriptor.annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Union and len(args) == 1:
        annotation = args[0]
    if annotation in (int, float):
        return ["abc"]
    if typing.get_origin(annotation) is typing.Literal or (isinstance(annotation, type) and issubclass(annotation, enum.Enum)):
        return ["no-such-choice"]
    return []


CASES = []
for name, command in _commands():
    CASES.append((name, [name, "--no-such-option"]))
    if any(p.required for p in command.params if p.param_type_name == "argument"):
        CASES.append((name, [name]))
    for param in command.params:
        if param.param_type_name != "option" or param.is_flag:
            continue
        for bad in _bad_values(param):
            CASES.append((name, [name, param.opts[0], bad]))


@pytest.mark.parametrize("argv", [c[1] for c in CASES], ids=[" ".join(c[1]) for c in CASES])
def test_usage_mistake_exits_2_without_traceback(argv, capsys):
    code, output = _run(argv, capsys)
    assert code == 2, output
    assert "Traceback" not in output
    assert "Error" in output or "error" in output


def test_the_walk_covers_every_verb_and_typed_options():
    names = {c[0] for c in CASES}
    assert {"train", "evaluate", "predict", "generate", "export", "compare"} <= names
    assert any("abc" in c[1] for c in CASES)  # typed options were found


def test_interrupt_exits_130(monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "app", interrupted)
    code, output = _run(["runs"], capsys)
    assert code == 130 and "interrupted" in output
