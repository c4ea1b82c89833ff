"""Start-up time: ``fmapviz --help``, a usage error and ``import fmapviz`` against importing torch.

    .venv/bin/python benchmarks/startup.py [--before DIR]

Each command runs in a fresh interpreter; the commands are interleaved round by round (one
warm-up round, then medians of ROUNDS) so machine load hits every row alike. ``--before DIR``
adds rows for an older checkout of the package (a folder holding ``fmapviz/``), e.g. made with
``git archive 36ddbdd fmapviz | tar -x -C /tmp/before``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from common import markdown_table, time_interleaved, write_section

ROOT = Path(__file__).resolve().parents[1]
ROUNDS = 7
COMMANDS = {
    "python -c pass (interpreter alone)": ["-c", "pass"],
    "fmapviz --help": ["-m", "fmapviz", "--help"],
    "fmapviz scan --help": ["-m", "fmapviz", "scan", "--help"],
    "fmapviz maps … --channels top:0 (usage error, exit 2)": [
        *("-m", "fmapviz", "maps", "net.py:build", "cat.png", "--layers", "0", "--channels", "top:0"),
    ],
    'python -c "import fmapviz"': ["-c", "import fmapviz"],
    'python -c "import torch, torchvision"': ["-c", "import torch, torchvision"],
    'python -c "import fmapviz; fmapviz.report" (every engine)': ["-c", "import fmapviz; fmapviz.report"],
}


def runner(arguments: list[str], path: Path) -> Callable[[], None]:
    env = {**os.environ, "PYTHONPATH": str(path), "OMP_NUM_THREADS": "1"}

    def run() -> None:
        subprocess.run([sys.executable, *arguments], cwd=path, env=env, capture_output=True, check=False)

    return run


def main(argv: list[str]) -> int:
    before = Path(argv[argv.index("--before") + 1]).resolve() if "--before" in argv else None
    methods = {name: runner(arguments, ROOT) for name, arguments in COMMANDS.items()}
    if before is not None:
        for name in ("fmapviz --help", 'python -c "import fmapviz"'):
            methods[f"{name} — before (eager imports)"] = runner(COMMANDS[name], before)
    started = time.perf_counter()
    times = time_interleaved(methods, rounds=ROUNDS, warmup=1)
    torch_time = times['python -c "import torch, torchvision"']
    rows = [[name, f"{seconds:.3f}", f"{seconds / torch_time:.2f}"] for name, seconds in times.items()]
    table = markdown_table(["command (fresh interpreter)", "median s", "× import torch, torchvision"], rows)
    body = (
        f"Median of {ROUNDS} interleaved rounds after one warm-up round; every row is a new Python process "
        "(`subprocess.run`, OMP_NUM_THREADS=1). The machine was shared with other jobs, so compare rows of this "
        "run, not runs. `--help`, usage errors and `import fmapviz` import no torch; the first use of a name "
        "(last row) loads the engines it needs.\n\n"
        f"{table}\n\nBenchmark wall time: {time.perf_counter() - started:.0f} s."
    )
    command = ".venv/bin/python benchmarks/startup.py" + (" --before DIR" if before else "")
    write_section("startup", "Start-up: --help, usage errors, import fmapviz", command, body)
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
