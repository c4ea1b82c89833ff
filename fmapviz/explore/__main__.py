"""``python -m fmapviz.explore MODEL DATA --layers L -o SITE``; under ``torchrun`` the processes share the work."""

from __future__ import annotations

import sys

from ..cli import main
from ..engines.scan import torchrun_group

if __name__ == "__main__":
    with torchrun_group():
        code = main(["explore", *sys.argv[1:]])
    raise SystemExit(code)
