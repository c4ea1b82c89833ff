"""Shared benchmark helpers: thread setup, interleaved timing, peak memory, result sections.

Every benchmark script writes its own section to ``benchmarks/results/<name>.md``;
``benchmarks/run.py`` runs the scripts and joins the sections into ``RESULTS.md``.
"""

from __future__ import annotations

import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

RESULTS_DIR = Path(__file__).parent / "results"
SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def setup(threads: int = 2, seed: int = 0) -> None:
    """Pin threads and seed, as in ../shared/PEERS.md."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)


def time_interleaved(methods: dict[str, Callable[[], object]], rounds: int = 7, warmup: int = 1) -> dict[str, float]:
    """Median seconds per method, timed round-robin so machine drift hits every method alike."""
    for _ in range(warmup):
        for method in methods.values():
            method()
    samples: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(rounds):
        for name, method in methods.items():
            start = time.perf_counter()
            method()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def peak_rss_delta_mb(code: str, setup_code: str = "", report: str = "None") -> tuple[float, object]:
    """Peak resident memory increase (MB) of ``code`` run in a fresh interpreter after ``setup_code``.

    The snippet runs in a subprocess so earlier allocations do not hide its peak; the
    baseline is the peak after ``setup_code`` (imports and model construction). Returns
    the increase and the value of the expression ``report`` evaluated after ``code``.
    """
    script = (
        "import resource, json, torch\ntorch.set_num_threads(2)\n"
        f"{setup_code}\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"{code}\n"
        "delta = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024\n"
        f"print(json.dumps([delta, {report}]))\n"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=root)
    delta, value = json.loads(out.stdout.strip().splitlines()[-1])
    return float(delta), value


def machine_line() -> str:
    """One line describing the machine and library versions."""
    return (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, python {platform.python_version()}"
    )


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(name: str, title: str, command: str, body: str) -> Path:
    """Write ``results/<name>.md``: a heading, the command that produced it, the machine, the body."""
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{name}.md"
    stamp = time.strftime("%Y-%m-%d %H:%M")
    path.write_text(f"## {title}\n\nCommand: `{command}` ({stamp}; {machine_line()})\n\n{body.strip()}\n")
    return path


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
