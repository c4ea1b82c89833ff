"""``python -m fmapviz …``: the command line, as ``fmapviz …``.

Under ``torchrun`` (``torchrun --nproc-per-node 2 -m fmapviz explore …``, or ``… scan …``) the processes share the work.
"""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
