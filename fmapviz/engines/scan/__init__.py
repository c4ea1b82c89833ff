"""scan: channel statistics, dead filters and top-activating examples over a whole dataset.

One streaming pass keeps, per channel of every selected layer (:mod:`.reduce`):

* exact running statistics of every activation value (count, mean, std, max, min,
  fraction positive; :class:`~fmapviz.engines.channels.statistics.RunningChannelStats`);
* the same statistics of each image's maximum (``image_max``), which rank channels by
  how strongly they fire (see :meth:`ScanResult.dead_channels`);
* a fixed-bin histogram of each image's maximum (bins :data:`HISTOGRAM_EDGES`, the same
  for every layer so histograms of shards add up);
* the top-k images by their maximum, with the (row, col) of that maximum in the map.

Layer outputs are reduced as each layer runs (``capture(reduce=...)``), so memory is
O(channels × k) whatever the dataset size. Images are named by their file path or, for a
DataLoader or Dataset, by their dataset index (:func:`fmapviz.data.indexed_batches`); crops are read back on demand
(:meth:`ScanResult.examples`, :mod:`.result`). Shards (``shard=(i, n)``: blocks of whole batches dealt
out in turn, :func:`fmapviz.data.shard_batches`) merge to float rounding (:meth:`ScanResult.merge`). Under
``torchrun`` the scan shards by rank and gathers the shards (:mod:`.driver`, with :mod:`fmapviz.distributed`)
folding every batch's statistics pairwise in batch order (:class:`.reduce.BatchTree`), so
``torchrun --nproc-per-node 2 -m fmapviz scan MODEL DATA --layers L -o out/`` runs two
processes and writes one merged result, bit for bit that of one process (at the same threads per process).
"""

from .driver import scan
from .reduce import HISTOGRAM_EDGES, LayerScan
from .result import ScanResult, TopExample, load_scan, receptive_window

__all__ = [
    "HISTOGRAM_EDGES",
    "LayerScan",
    "ScanResult",
    "TopExample",
    "load_scan",
    "receptive_window",
    "scan",
]
