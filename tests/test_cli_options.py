"""One spelling per option across the command line: every subcommand's parser is walked and compared."""

from __future__ import annotations

import argparse
from collections import defaultdict

import pytest

from fmapviz.cli import build_parser, main

SHARED = {"device", "size", "batch_size", "out", "weights", "seed", "quiet", "layers", "layer", "force", "debug"}
"""Concepts several commands have: each must be spelled the same in all of them."""

SYNONYMS = {
    "-l",
    "--output",
    "--output-dir",
    "--outdir",
    "--batch",
    "--bs",
    "--image-size",
    "--img-size",
    "--layer-names",
}
"""Spellings that would be a second name for a concept above."""


def _options() -> dict[str, list[argparse.Action]]:
    parser = build_parser()
    subparsers = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    return {
        name: [action for action in sub._actions if action.option_strings and action.help != argparse.SUPPRESS]
        for name, sub in subparsers.choices.items()
    }


def test_every_layer_option_is_spelled_layers_with_the_singular_as_alias():
    with_layers = []
    for command, actions in _options().items():
        for action in actions:
            if {"--layer", "--layers"} & set(action.option_strings):
                assert action.option_strings == ["--layers", "--layer"], (command, action.option_strings)
                with_layers.append(command)
    assert {"maps", "saliency", "actmax", "report", "scan", "channel", "explore", "compare", "init"} <= set(with_layers)


def test_no_option_is_a_second_name_for_the_output_folder():
    for command, actions in _options().items():
        spellings = {option for action in actions for option in action.option_strings}
        assert not spellings & SYNONYMS, (command, spellings & SYNONYMS)
        outs = [action.option_strings for action in actions if action.dest == "out"]
        assert outs == ([] if command == "layers" else [["-o", "--out"]]), command  # layers prints a table
        assert any(action.option_strings == ["--output-key"] for action in actions), command


def test_each_shared_concept_has_one_spelling_across_commands():
    spellings: dict[str, set[tuple[str, ...]]] = defaultdict(set)
    by_option: dict[str, set[tuple[str, ...]]] = defaultdict(set)
    for actions in _options().values():
        for action in actions:
            spellings[action.dest].add(tuple(action.option_strings))
            for option in action.option_strings:
                by_option[option].add(tuple(action.option_strings))
    for concept in SHARED:
        assert len(spellings[concept]) == 1, (concept, spellings[concept])
    assert spellings["layer"] == spellings["layers"] == {("--layers", "--layer")}
    assert all(len(forms) == 1 for forms in by_option.values()), {k: v for k, v in by_option.items() if len(v) > 1}


@pytest.mark.parametrize("command", ["maps", "scan", "report"])
def test_layers_and_layer_add_up_in_any_order(command):
    argv = [command, "m.py:f", "x.png", "--layer", "0", "--layers", "2", "3", "--layer", "4"]
    assert build_parser().parse_args(argv).layers == ["0", "2", "3", "4"]


def test_the_old_output_spelling_is_refused_with_one_line(capsys):
    assert main(["saliency", "m.py:f", "x.png", "--output", "scores"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "-o/--out names the output folder, --output-key KEY" in error
