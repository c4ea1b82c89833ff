"""fmapviz.data (images in batches) and fmapviz.distributed (torchrun helpers) outside a process group."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fmapviz.data import batch_images, file_batches, image_batches, indexed_batches, list_photos, shard_batches
from fmapviz.distributed import barrier, gather_objects, is_distributed, rank_and_world, torchrun_group
from fmapviz.errors import ImageLoadError
from fmapviz.inputs import default_transform


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    for index, name in enumerate(["b.png", "a.png", "nested/c.png"]):
        Image.fromarray(np.full((20, 30, 3), 40 * index, dtype=np.uint8)).save(folder / name)
    (folder / "broken.png").write_bytes(b"not a png")
    return folder


def test_image_batches_read_each_file_once_for_every_transform(photos, monkeypatch):
    import fmapviz.data

    reads = []
    original = fmapviz.data.read_image_file
    monkeypatch.setattr(fmapviz.data, "read_image_file", lambda path: reads.append(path) or original(path))
    small, large = default_transform(8), default_transform(16)
    files, batches = image_batches([photos / "a.png", photos / "b.png"], [small, large, small], 1)
    assert files == [str(photos / "a.png"), str(photos / "b.png")]
    shapes = [tuple(tuple(x.shape) for x in batch) for batch in batches]
    assert shapes == [((1, 3, 8, 8), (1, 3, 16, 16), (1, 3, 8, 8))] * 2
    assert reads == files


def test_image_batches_of_tensors_batches_and_nothing(photos):
    _, batches = image_batches(torch.zeros(5, 3, 4, 4), [None], 2)
    assert [len(x) for (x,) in batches] == [2, 2, 1]
    _, batches = image_batches(torch.zeros(3, 4, 4), [None], 2)
    assert [tuple(x.shape) for (x,) in batches] == [(1, 3, 4, 4)]
    _, batches = image_batches([(torch.ones(2, 3, 4, 4), torch.zeros(2)), {"image": torch.ones(1, 3, 4, 4)}], [None], 8)
    assert [len(x) for (x,) in batches] == [2, 1]
    assert list(image_batches([], [None], 2)[1]) == []
    with pytest.raises(ValueError, match="batch_size"):
        image_batches(torch.zeros(1, 3, 4, 4), [None], 0)
    with pytest.raises(ValueError, match=r"\(C,H,W\) or \(N,C,H,W\)"):
        image_batches(torch.zeros(4, 4), [None], 2)
    with pytest.raises(TypeError, match="Cannot read images from a int"):
        image_batches(3, [None], 2)
    sizes = iter([4, 5])
    with pytest.raises(ImageLoadError, match="different sizes"):
        next(file_batches([photos / "a.png", photos / "b.png"], [lambda image: torch.rand(3, next(sizes), 4)], 2))


def test_indexed_batches_shard_files_and_skip_the_unreadable_with_their_reason(photos):
    files, batches = indexed_batches(photos, (0, 2), default_transform(8), 1, 0)
    assert files == sorted(str(path) for path in photos.rglob("*.png"))
    (first, indices, images, skipped), (second, none, empty, bad) = list(batches)  # batches 0 and 2 of 4
    assert (first, indices.tolist(), images.shape, skipped) == (0, [0], (1, 3, 8, 8), [])
    assert (second, none.tolist(), empty) == (2, [], None)  # files[2] is broken.png
    assert [index for index, _ in bad] == [2] and "broken.png" in bad[0][1]
    with pytest.raises(TypeError, match="Cannot scan a int"):
        indexed_batches(3, None, default_transform(8), 8, 0)


@pytest.mark.parametrize("batches, shards", [(1, 2), (7, 2), (16, 2), (100, 3), (33, 8)])
def test_shards_deal_out_whole_power_of_two_blocks_of_batches(batches, shards):
    parts = [shard_batches(batches, (i, shards)) for i in range(shards)]
    assert sorted(sum(parts, [])) == list(range(batches))  # every batch in exactly one shard
    block = 1 << max(0, (batches // (4 * shards)).bit_length() - 1)
    for i, part in enumerate(parts):
        assert all((number // block) % shards == i for number in part)
    assert shard_batches(batches, None) == list(range(batches))
    assert max(map(len, parts)) - min(map(len, parts)) <= block  # dealt out in turn: balanced to one block
    assert batches < 4 * shards or block * 4 * shards <= batches  # and every shard gets four blocks or more


def test_batch_images_finds_the_tensor_or_says_what_to_yield():
    x = torch.zeros(1, 3, 2, 2)
    assert batch_images(x) is x and batch_images((x, 0)) is x and batch_images({"pixel_values": x}) is x
    with pytest.raises(TypeError, match="yield a tensor"):
        batch_images("photo.png")


def test_list_photos_gives_absolute_paths_once(photos, monkeypatch):
    monkeypatch.chdir(photos.parent)
    found = list_photos(["photos", "photos/a.png"])
    assert len(found) == 4 and all(path.startswith("/") for path in found)
    with pytest.raises(ImageLoadError, match="No photos given"):
        list_photos([])


def test_distributed_helpers_answer_as_one_process_outside_torchrun(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    assert not is_distributed()
    assert rank_and_world() == (0, 1)
    assert gather_objects({"weights": "abc"}) == [{"weights": "abc"}]
    barrier()
    with torchrun_group() as (rank, device):
        assert (rank, device) == (0, None)
    with torchrun_group("cpu") as (rank, device):
        assert (rank, device) == (0, "cpu")
