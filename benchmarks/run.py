"""Run benchmark scripts and join their sections into benchmarks/RESULTS.md.

python benchmarks/run.py                 # every benchmark
python benchmarks/run.py capture plot    # only these; other sections are kept
python benchmarks/run.py --join          # only rebuild RESULTS.md from benchmarks/results/

RESULTS.md is only ever joined from benchmarks/results/: notes on reading a run go at the end of that run's
results/<name>.md, so a join keeps them and a rerun of the script replaces them with its own run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
ORDER = [
    "capture",
    "plot",
    "saliency",
    "saliency_equivalence",
    "saliency_methods",  # written by saliency.py --new
    "default_gradcam",
    "scorecam_allocator",
    "saliency_quality",
    "actmax",
    "actmax_quality",
    "report",
    "scan",
    "vit",
    "explain_channels",
    "explore",
    "explore_model",
    "startup",
    "compare",
]


def main(argv: list[str]) -> int:
    names = [] if argv == ["--join"] else argv or [name for name in ORDER if (HERE / f"{name}.py").exists()]
    for name in names:
        print(f"== {name}", flush=True)
        subprocess.run([sys.executable, str(HERE / f"{name}.py")], check=True)
    sections = sorted((HERE / "results").glob("*.md"), key=lambda p: (ORDER + [p.stem]).index(p.stem))
    text = "# Benchmark results\n\nCompare ratios, not absolute times: the VM speed drifts (../shared/PEERS.md).\n"
    text += "Each section names the command that produced it. `python benchmarks/run.py` reruns everything.\n\n"
    (HERE / "RESULTS.md").write_text(text + "\n\n".join(p.read_text() for p in sections))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
