"""``fmapviz layers``: print every layer's output shape, parameters, stride and receptive field."""

from __future__ import annotations

import argparse

from .common import load_model_from
from .options import MODEL_HELP, Command


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help=MODEL_HELP)


def run(args: argparse.Namespace) -> int:
    import fmapviz

    loaded = load_model_from(args)
    print(fmapviz.summary(loaded.model, (1, loaded.channels, *loaded.input_size)))
    return 0


COMMAND = Command(
    "layers",
    "Print every layer: output shape, parameters, stride and receptive field.",
    add_options,
    run,
    "fmapviz layers mobilenet_v2   (architecture only: no weights needed)\n"
    "  fmapviz layers mnist_net.py:build --mean 0.1307 --std 0.3081   (a grayscale model; its size is found)",
    weights="none",
    size="224",
)
