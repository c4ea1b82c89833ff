"""``python -m fmapviz.explore MODEL DATA --layers L -o SITE``; under ``torchrun`` the processes share the work."""

from __future__ import annotations

import sys

import torch

from ..cli import main
from ..scan import _init_distributed

if __name__ == "__main__":
    started = _init_distributed()
    try:
        code = main(["explore", *sys.argv[1:]])
    finally:
        if started:
            torch.distributed.destroy_process_group()
    raise SystemExit(code)
