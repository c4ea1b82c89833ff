"""Import every peer the benchmarks compare against; `make bench-deps` ends with this, so a fresh venv that
lacks one of their undeclared dependencies (lucent needs `decorator`) fails at install time, not mid-benchmark."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lucent_shim import import_lucent  # noqa: E402

PEERS = ["captum.attr", "pytorch_grad_cam", "torchcam.methods", "torchlens", "kornia"]


def main() -> int:
    failures = []
    for name in PEERS:
        try:
            importlib.import_module(name)
        except Exception as error:  # noqa: BLE001 - report every peer that fails, whatever the reason
            failures.append(f"{name}: {error}")
    try:
        import_lucent()
    except Exception as error:  # noqa: BLE001
        failures.append(f"lucent: {error}")
    for failure in failures:
        print(f"peer import failed: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
