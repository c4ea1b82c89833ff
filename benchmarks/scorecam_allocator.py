"""Score-CAM against pytorch-grad-cam with and without page faults, each setting in fresh processes.

A CPU forward of a 16-row batch at 224 px makes tensors of 77 MB. glibc maps blocks above its mmap
threshold (at most 32 MB) fresh from the OS on every allocation, and the first touch of every page then
faults; that can be half of a forward's time. fmapviz's fast forward runs such batches in slices under
``SLICE_BYTES``. This script times both libraries with the default allocator, and with glibc's mmap and
trim thresholds fixed at 4 GB (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``: memory is reused,
never mapped afresh), which leaves only the arithmetic.

    python benchmarks/scorecam_allocator.py     # section "scorecam_allocator"
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from common import interleaved_samples, markdown_table, write_section

FIXED = {"MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "4294967296"}
ROUNDS = 2


def child(batch: int) -> None:
    """In a fresh process: the Score-CAM rows of ``saliency.masked_group(batch)``, interleaved in random order;
    prints {title, rows: {name: [median seconds, median page faults]}} as JSON."""
    import saliency

    saliency.setup(threads=2)
    title, rows = next(iter(saliency.masked_group(batch).items()))
    chosen = {name: run for name, run in rows.items() if "ScoreCAM" in name and "torchcam" not in name}
    chosen = {"fmapviz scorecam (batch_size=16)": rows["fmapviz scorecam (batch_size=16)"], **chosen}
    samples = interleaved_samples(chosen, rounds=ROUNDS, warmup=0)
    medians = {name: [statistics.median(column) for column in zip(*values)] for name, values in samples.items()}
    print(json.dumps({"title": title, "rows": medians}))


def main() -> None:
    body = []
    for label, extra in (("default glibc", {}), ("glibc thresholds fixed at 4 GB (no page faults)", FIXED)):
        for batch in (1, 16):
            env = {**os.environ, **extra, "TQDM_DISABLE": "1"}
            command = [sys.executable, str(Path(__file__)), "--child", str(batch)]
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            print(label, result, flush=True)
            ours = result["rows"]["fmapviz scorecam (batch_size=16)"][0]
            table = []
            for name, (seconds, faults) in result["rows"].items():
                ratio = "" if name.startswith("fmapviz") else f"{seconds / ours:.2f}"
                table.append([name, f"{seconds:.2f}", f"{faults:,.0f}", ratio])
            body.append(
                f"### {label}: {result['title']}\n\n"
                + markdown_table(["method", "seconds", "page faults", "peer ÷ fmapviz"], table)
            )
    intro = (
        f"Fresh process per setting and batch, median of {ROUNDS} interleaved rounds in random order, 2 threads. "
        "The last column is the peer's time over fmapviz's (above 1: fmapviz is faster)."
    )
    write_section(
        "scorecam_allocator",
        "Score-CAM with and without page faults",
        "python benchmarks/scorecam_allocator.py",
        intro + "\n\n" + "\n\n".join(body),
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(int(sys.argv[2]))
    else:
        main()
