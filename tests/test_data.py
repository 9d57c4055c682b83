"""Datasets: built-ins offline, user ImageFolder trees, clear errors, decode-once caching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from search.data import datasets
from search.data.builtin import BUILTIN_DATASETS
from search.data.datasets import load_dataset, prepare, stratified_split
from search.data.sources import dataset_classes
from search.core.errors import DataError
from search.space.parse import DatasetSpec


def _png(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (12, 12)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(abs(hash(path.name)) % 2**32)
    arr = np.clip(np.array(color) + rng.integers(-20, 20, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(path)


def _tree(root: Path, per_class: int = 10, classes: tuple[str, ...] = ("cat", "dog")) -> None:
    for c, color in zip(classes, [(200, 50, 50), (50, 50, 200), (50, 200, 50)]):
        for i in range(per_class):
            _png(root / c / f"{i}.png", color)


def test_builtins_are_offline_and_split_fixed() -> None:
    spec = DatasetSpec(name="digits")
    data = load_dataset(spec)
    assert data.images.shape == (1797, 3, 8, 8) and data.images.dtype == torch.uint8
    assert len(data.train) + len(data.val) + len(data.test) == 1797
    assert not set(data.train.tolist()) & set(data.val.tolist())
    again = stratified_split(data.labels, 0.2, 0.2, 0)
    assert torch.equal(again[0], data.train)
    assert load_dataset(spec) is data  # opened once per process
    shapes = load_dataset(DatasetSpec(name="shapes"))
    assert shapes.images.shape[1:] == (3, 32, 32) and len(shapes.classes) == 6
    rare = load_dataset(DatasetSpec(name="shapes-rare"))
    counts = rare.class_counts()
    assert rare.classes == ["other", "target"] and counts[1] < 0.25 * sum(counts)


@pytest.mark.parametrize("name", BUILTIN_DATASETS.names())
def test_builtin_class_names_are_known_before_generating(name: str) -> None:
    """``create`` checks positive_class against the registered names (no torch): every generated
    label is one of them and each has images."""
    entry = BUILTIN_DATASETS.get(name)
    images, labels, classes = entry(0)
    assert classes == list(entry.classes) == dataset_classes(DatasetSpec(name=name))
    counts = torch.bincount(labels)
    assert len(counts) == len(classes) and bool((counts > 0).all()) and len(images) == len(labels)


def test_folder_class_names_without_decoding(tmp_path: Path) -> None:
    _tree(tmp_path / "pets", classes=("dog", "cat", "bird"))
    spec = DatasetSpec(path=str(tmp_path / "pets"))
    assert dataset_classes(spec) == load_dataset(spec).classes == ["bird", "cat", "dog"]


def test_shapes_color_carries_the_label() -> None:
    data = load_dataset(DatasetSpec(name="shapes"))
    red = [i for i, c in enumerate(data.classes) if c.startswith("red")]
    is_red = torch.isin(data.labels, torch.tensor(red))
    img = data.images.float()
    # Shape pixels differ from the gray background mostly in the red-green direction.
    redness = (img[:, 0] - img[:, 1]).amax(dim=(1, 2))
    assert redness[is_red].mean() > redness[~is_red].mean() + 50


def test_folder_single_tree_is_split_stratified(tmp_path: Path) -> None:
    _tree(tmp_path / "data")
    data = load_dataset(DatasetSpec(path=str(tmp_path / "data"), val_fraction=0.2, test_fraction=0.2))
    assert data.classes == ["cat", "dog"]
    assert data.class_counts("train") == [6, 6] and data.class_counts("val") == [2, 2]
    assert data.class_counts("test") == [2, 2]
    assert data.info["skipped_images"] == 0


def test_folder_with_split_dirs_and_mixed_sizes(tmp_path: Path) -> None:
    root = tmp_path / "data"
    _tree(root / "train", per_class=6)
    _tree(root / "val", per_class=2)
    _png(root / "train" / "cat" / "wide.png", (200, 50, 50), size=(30, 10))
    data = load_dataset(DatasetSpec(path=str(root), test_fraction=0.2))
    assert len(data.val) == 4 and data.class_counts("val") == [2, 2]
    assert len(data.test) > 0  # test carved from train since there is no test/ folder
    assert data.images.shape[1:] == (3, 64, 64) and data.native_size is None  # sizes differ: the default size
    prepared = prepare(DatasetSpec(path=str(root), test_fraction=0.2), 16, "pad", torch.device("cpu"))
    assert prepared.train_x.shape[1:] == (3, 16, 16)


def test_corrupt_images_are_skipped_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _tree(tmp_path / "data")
    (tmp_path / "data" / "cat" / "broken.png").write_bytes(b"not a png at all")
    (tmp_path / "data" / "dog" / "notes.txt").write_text("ignored: not an image suffix")
    data = load_dataset(DatasetSpec(path=str(tmp_path / "data")))
    assert data.info["skipped_images"] == 1 and len(data.labels) == 20
    assert "broken.png" in caplog.text


@pytest.mark.parametrize("case,message", [
    ("missing", "does not exist"),
    ("empty_class", "class 'dog' has no readable images"),
    ("one_class", "only one class"),
    ("no_classes", "no class folders"),
    ("unknown_val_class", "not in the training folder"),
])
def test_folder_errors(tmp_path: Path, case: str, message: str) -> None:
    root = tmp_path / "data"
    if case == "empty_class":
        _tree(root, classes=("cat",))
        (root / "dog").mkdir()
        (root / "dog" / "x.jpg").write_bytes(b"garbage")
    elif case == "one_class":
        _tree(root, classes=("cat",))
    elif case == "no_classes":
        root.mkdir()
    elif case == "unknown_val_class":
        _tree(root / "train")
        _tree(root / "val", per_class=2, classes=("cat", "bird"))
    with pytest.raises(DataError, match=message):
        load_dataset(DatasetSpec(path=str(root)))


def test_prepare_caches_resized_tensors() -> None:
    spec = DatasetSpec(name="digits", limit=200)
    a = prepare(spec, 16, "stretch", torch.device("cpu"))
    assert prepare(spec, 16, "stretch", torch.device("cpu")) is a
    assert a.train_x.shape[1:] == (3, 16, 16)
    datasets.clear_cache()
    assert prepare(spec, 16, "stretch", torch.device("cpu")) is not a
