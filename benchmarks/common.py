"""Shared benchmark helpers: thread setup, interleaved timing, peak memory, result sections.

Every benchmark script writes its own section to ``benchmarks/results/<name>.md``;
``benchmarks/run.py`` runs the scripts and joins the sections into ``RESULTS.md``.
"""

from __future__ import annotations

import json
import os
import platform
import random
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
if (SHARED / "torch-home").is_dir():  # the real mobilenet_v2 weights, offline (as .ci/run and the Makefile do)
    os.environ.setdefault("TORCH_HOME", str(SHARED / "torch-home"))


def setup(threads: int = 2, seed: int = 0) -> None:
    """Pin threads and seed, as in ../shared/PEERS.md."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)


def interleaved_samples(
    methods: dict[str, Callable[[], object]],
    rounds: int = 7,
    warmup: int = 1,
    sync: Callable[[], object] | None = None,
) -> dict[str, list[tuple[float, int]]]:
    """(seconds, page faults) of every timed call of each method, timed round-robin so machine drift hits
    every method alike.

    Each round runs the methods in a new (seeded) random order, so no method always runs right after
    the same neighbour: what a neighbour leaves behind (freed memory the next call must fault in again,
    a cold cache) then lands on every method alike instead of on one. ``sync`` (``torch.cuda.synchronize``)
    runs before and after every timed call, so a GPU's queued work is counted with the call that queued it.
    """
    sync = sync or (lambda: None)
    for _ in range(warmup):
        for method in methods.values():
            method()
    samples: dict[str, list[tuple[float, int]]] = {name: [] for name in methods}
    order = random.Random(0)
    for _ in range(rounds):
        names = list(methods)
        order.shuffle(names)
        for name in names:
            sync()
            faults, start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
            methods[name]()
            sync()
            seconds = time.perf_counter() - start
            samples[name].append((seconds, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults))
    return samples


def time_interleaved(
    methods: dict[str, Callable[[], object]],
    rounds: int = 7,
    warmup: int = 1,
    sync: Callable[[], object] | None = None,
) -> dict[str, float]:
    """Median seconds per method over :func:`interleaved_samples`."""
    samples = interleaved_samples(methods, rounds, warmup, sync)
    return {name: statistics.median(seconds for seconds, _ in values) for name, values in samples.items()}


def peak_rss_delta_mb(code: str, setup_code: str = "", report: str = "None", repeats: int = 3) -> tuple[float, object]:
    """Peak resident memory increase (MB) of ``code`` run in a fresh interpreter after ``setup_code``.

    The snippet runs in a subprocess so earlier allocations do not hide its peak. After
    ``setup_code`` (imports, model construction) the kernel's high-water mark is reset
    (``/proc/self/clear_refs``), so the increase is the peak of ``code`` above the resident
    memory at that point. ``ru_maxrss`` is not used: Linux carries it across ``exec`` from the
    parent, so a child of a large process reports the parent's peak. Median of ``repeats``
    processes; also returns the value of the expression ``report`` evaluated after ``code``.
    """
    script = (
        "import json, torch\ntorch.set_num_threads(2)\n"
        "def status(field):\n"
        "    line = next(l for l in open('/proc/self/status') if l.startswith(field + ':'))\n"
        "    return int(line.split()[1])\n"
        f"{setup_code}\n"
        "open('/proc/self/clear_refs', 'w').write('5')\n"
        "base = status('VmRSS')\n"
        f"{code}\n"
        "delta = (status('VmHWM') - base) / 1024\n"
        f"print(json.dumps([delta, {report}]))\n"
    )
    root = Path(__file__).resolve().parents[1]
    runs = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=root)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    delta = statistics.median(float(run[0]) for run in runs)
    return delta, runs[0][1]


def machine_line() -> str:
    """One line describing the machine and library versions."""
    return (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, python {platform.python_version()}, load average {os.getloadavg()[0]:.1f}"
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
