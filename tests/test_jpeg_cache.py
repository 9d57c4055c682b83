"""The compact cache for large photos (``dataset.cache: jpeg``): resized once, re-encoded, decoded per batch."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.large_photos import make_photos
from search.core.config import TrialConfig
from search.core.spec import DatasetSpec
from search.data import cache, jpeg_cache
from search.data.datasets import MappedImages, clear_cache, load_dataset, prepare
from search.space.parse import parse_space
from search.train import loop

SIZE = 64
GB = 10**9


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    make_photos(root, 40)
    return root


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))
    clear_cache()
    yield tmp_path / "cache"
    clear_cache()


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.double() - b.double()) ** 2).mean())
    return 10 * math.log10(255**2 / mse)


def test_the_jpeg_cache_holds_the_raw_cache_s_images_in_a_fraction_of_the_bytes(photos: Path, cache_dir: Path) -> None:
    raw = load_dataset(DatasetSpec(path=str(photos), cache="raw"), SIZE)
    jpeg = load_dataset(DatasetSpec(path=str(photos), cache="jpeg", cache_quality=90), SIZE)
    assert (raw.info["cache_format"], jpeg.info["cache_format"]) == ("raw", "jpeg")
    assert jpeg.images.shape == raw.images.shape == (40, 3, SIZE, SIZE)
    assert torch.equal(jpeg.labels, raw.labels) and torch.equal(jpeg.train, raw.train)
    assert _psnr(jpeg.images[slice(None)], raw.images) > 30  # photos at q90: ~35-37 dB
    [manifest] = [json.loads(p.read_text()) for p in cache_dir.rglob("*jpeg90*.json")]
    assert manifest["format"] == "jpeg" and manifest["quality"] == 90 and manifest["shape"] == [40, 3, SIZE, SIZE]
    [data] = cache_dir.rglob("*.jpg.bin")
    assert data.stat().st_size == manifest["bytes"] < raw.images.numel() / 4
    listed = {(e["size"], e["bytes"]) for d in cache.list_entries(cache_dir) for e in d["entries"]}
    assert (SIZE, manifest["bytes"]) in listed  # `strategy-search cache --list` shows it

    # Every way a split is indexed decodes the same pixels.
    x = jpeg.images
    assert torch.equal(x[3], x[torch.tensor(3)]) and torch.equal(x[torch.tensor([7, 3])][1], x[3])
    assert torch.equal(x[2:5][0], x[2]) and x[torch.tensor([], dtype=torch.long)].shape == (0, 3, SIZE, SIZE)
    split = MappedImages(x, torch.tensor([9, 1, 5]))
    assert torch.equal(split[torch.tensor([2, 0])], torch.stack([x[5], x[9]]))


def test_opened_again_without_rebuilding_and_rebuilt_when_damaged(photos: Path, cache_dir: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    spec = DatasetSpec(path=str(photos), cache="jpeg")
    first = jpeg_cache.open_entry(load_source(spec), SIZE, "stretch", 90)
    assert first.built
    again = jpeg_cache.open_entry(load_source(spec), SIZE, "stretch", 90)
    assert not again.built and torch.equal(again.images[0], first.images[0])
    [data] = cache_dir.rglob("*.jpg.bin")
    with open(data, "r+b") as fh:
        fh.truncate(data.stat().st_size - 100)
    with caplog.at_level(logging.WARNING):
        rebuilt = jpeg_cache.open_entry(load_source(spec), SIZE, "stretch", 90)
    assert rebuilt.built and "truncated" in caplog.text
    assert torch.equal(rebuilt.images[0], first.images[0])
    # Another quality is another entry; both stay.
    jpeg_cache.open_entry(load_source(spec), SIZE, "stretch", 95)
    assert len(list(cache_dir.rglob("*.jpg.bin"))) == 2


def load_source(spec: DatasetSpec) -> cache.Source:
    from search.data.datasets import source_for

    return source_for(spec)


def test_auto_takes_jpeg_when_the_raw_cache_would_not_fit_half_the_ram() -> None:
    # 10^6 photos at 224 px: 150 GB raw.
    assert jpeg_cache.choose_format("auto", 10**6, 224, ram=256 * GB) == "jpeg"
    assert jpeg_cache.choose_format("auto", 10**6, 224, ram=512 * GB) == "raw"
    assert jpeg_cache.choose_format("auto", 50_000, 64, ram=24 * GB) == "raw"
    assert jpeg_cache.choose_format("raw", 10**6, 224, ram=8 * GB) == "raw"
    assert jpeg_cache.choose_format("jpeg", 10, 8, ram=512 * GB) == "jpeg"


def test_training_decodes_batches_and_augments_after_decoding(photos: Path, cache_dir: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[int] = []
    original = jpeg_cache.JpegImages.decode

    def spy(self: jpeg_cache.JpegImages, rows: object, device: object = "cpu") -> torch.Tensor:
        out = original(self, rows, device)
        decoded.append(len(out))
        return out

    monkeypatch.setattr(jpeg_cache.JpegImages, "decode", spy)
    spec = DatasetSpec(path=str(photos), cache="jpeg")
    data = prepare(spec, 32, "stretch", torch.device("cpu"))
    assert isinstance(data.train_x, MappedImages) and isinstance(data.train_x.base, jpeg_cache.JpegImages)
    decoded.clear()
    result = loop.train(TrialConfig(width=4, depth=1, batch_size=8, epochs=2, seed=0, augment="light",
                                    input_size=32), spec, device=torch.device("cpu"))
    n_train = len(data.train_y)
    assert 8 in decoded  # training batches were decoded per batch (crop and flip then run on them)
    assert sum(decoded) >= 2 * n_train
    assert len(result.history) == 2 and math.isfinite(result.history[-1].train_loss)


def test_space_keys_are_checked() -> None:
    space = parse_space({"study": "s", "dataset": {"name": "digits", "cache": "jpeg", "cache_quality": 95}})
    assert (space.dataset.cache, space.dataset.cache_quality) == ("jpeg", 95)
    assert parse_space({"study": "s"}).dataset.cache == "auto"
    with pytest.raises(Exception, match=r"dataset.cache.*allowed: auto, raw, jpeg"):
        parse_space({"study": "s", "dataset": {"name": "digits", "cache": "png"}})
    with pytest.raises(Exception, match="dataset.cache_quality"):
        parse_space({"study": "s", "dataset": {"name": "digits", "cache_quality": 101}})


def test_a_builtin_dataset_can_use_it_too(cache_dir: Path) -> None:
    data = load_dataset(DatasetSpec(name="digits", cache="jpeg", cache_quality=95), 16)
    raw = load_dataset(DatasetSpec(name="digits"), 16)
    assert data.info["cache_format"] == "jpeg" and raw.info["cache_format"] == "raw"
    assert np.array_equal(data.labels.numpy(), raw.labels.numpy())
    assert _psnr(data.images[0:50], raw.images[0:50]) > 25
