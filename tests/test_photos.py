"""Real JPEG photos, written at test time: baseline and progressive, RGB, CMYK and grayscale, several
sizes (large enough for the draft decode's 1/8 scale) and every EXIF orientation (1-8).

A phone stores a portrait photo sideways and says so in its EXIF orientation tag; the viewer turns
it. The cache, the training input, the doctor's facts (from the cache's per-image sizes) and
``predict`` must see it as shown, or a model is trained and asked on sideways pictures.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from search.core.spec import DatasetSpec
from search.data import cache, decode, sources
from search.data.datasets import load_dataset, prepare
from search.data.decode import decode_fit, read_header
from test_export import Searched, _invoke

# The quadrants of the upright test picture (width 60, height 40): what a viewer shows.
QUADRANTS = {"top-left": (220, 30, 30), "top-right": (30, 200, 40), "bottom-left": (30, 40, 220),
             "bottom-right": (235, 235, 235)}
UPRIGHT_SIZE = (60, 40)
# The transpose that stores an upright picture so that EXIF orientation k shows it upright again:
# the inverse of what the viewer applies (flips, 180 degrees and the transposes undo themselves).
STORE = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
         4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90,
         7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270}


def quadrant_picture(size: tuple[int, int] = UPRIGHT_SIZE) -> Image.Image:
    w, h = size
    arr = np.zeros((h, w, 3), np.uint8)
    arr[: h // 2, : w // 2] = QUADRANTS["top-left"]
    arr[: h // 2, w // 2 :] = QUADRANTS["top-right"]
    arr[h // 2 :, : w // 2] = QUADRANTS["bottom-left"]
    arr[h // 2 :, w // 2 :] = QUADRANTS["bottom-right"]
    return Image.fromarray(arr)


@functools.lru_cache(maxsize=None)
def photo(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """A photo-like picture: smooth gradients, a few soft discs, mild sensor noise."""
    w, h = size
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    arr = np.stack([90 + 80 * x / w, 60 + 120 * y / h, 160 - 60 * (x + y) / (w + h)], axis=-1)
    for _ in range(4):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.08, 0.25) * min(w, h)
        disc = np.clip(1.5 - np.hypot(x - cx, y - cy) / r, 0, 1)[..., None]
        arr = arr * (1 - disc) + disc * rng.uniform(0, 255, 3)
    arr += rng.normal(0, 3, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def write_jpeg(path: Path, upright: Image.Image, orientation: int = 1, *, mode: str = "RGB",
               progressive: bool = False, quality: int = 92) -> Path:
    """``upright`` stored as a camera would: turned by ``orientation``'s inverse, with the tag."""
    stored = upright if STORE[orientation] is None else upright.transpose(STORE[orientation])
    exif = Image.Exif()
    exif[decode.ORIENTATION_TAG] = orientation
    exif[0x010F] = "strategy-search tests"  # Make: a real EXIF block carries more than the orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    stored.convert(mode).save(path, "JPEG", exif=exif, progressive=progressive, quality=quality)
    with Image.open(path) as check:  # what was written is what the test means
        assert check.format == "JPEG" and check.mode == mode
        assert bool(check.info.get("progressive")) == progressive
        assert check.getexif()[decode.ORIENTATION_TAG] == orientation
    return path


def quadrant_colors(img: np.ndarray) -> dict[str, np.ndarray]:
    """Mean color of the middle of each quadrant of a (3, S, S) image."""
    s = img.shape[-1]
    a, b, c, d = s // 8, 3 * s // 8, 5 * s // 8, 7 * s // 8
    boxes = {"top-left": (a, b, a, b), "top-right": (a, b, c, d), "bottom-left": (c, d, a, b),
             "bottom-right": (c, d, c, d)}
    return {k: img[:, y0:y1, x0:x1].reshape(3, -1).mean(axis=1) for k, (y0, y1, x0, x1) in boxes.items()}


def assert_upright(img: np.ndarray, tolerance: float = 30.0, gray: bool = False) -> None:
    for name, mean in quadrant_colors(img).items():
        want = np.asarray(QUADRANTS[name], np.float32)
        if gray:  # ITU-R 601 luma, as PIL converts RGB to L
            want = np.full(3, want @ np.asarray([0.299, 0.587, 0.114]), np.float32)
        assert np.abs(mean - want).max() < tolerance, (name, mean.round(), want)


# ----------------------------------------------------------------------------- the decoder


@pytest.mark.parametrize("progressive", [False, True], ids=["baseline", "progressive"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_decodes_upright(tmp_path: Path, orientation: int, progressive: bool) -> None:
    path = write_jpeg(tmp_path / "p.jpg", quadrant_picture(), orientation, progressive=progressive)
    assert read_header(path) == (*UPRIGHT_SIZE, "")  # the shown size, from the header alone
    for aspect in ("stretch", "pad"):
        img, why, original = decode_fit(path, 32, aspect)
        assert why == "" and img is not None and img.shape == (3, 32, 32) and original == UPRIGHT_SIZE
        if aspect == "stretch":
            assert_upright(img)
        else:  # letterboxed: 60x40 shown -> 32x21 with bars above and below, never left and right
            rows = img.reshape(3, 32, 32).max(axis=(0, 2))
            cols = img.reshape(3, 32, 32).max(axis=(0, 1))
            assert rows[0] == 0 and rows[-1] == 0 and cols.min() > 0, (rows, cols)


@pytest.mark.parametrize("size", [(48, 36), (640, 480), (1024, 768)], ids=["small", "vga", "large"])
@pytest.mark.parametrize(("orientation", "progressive"), [(1, False), (6, True), (8, False)],
                         ids=["1-baseline", "6-progressive", "8-baseline"])
def test_draft_decode_matches_a_full_decode(tmp_path: Path, size: tuple[int, int], orientation: int,
                                            progressive: bool) -> None:
    """The draft decode (1/2..1/8 scale inside the JPEG decoder) gives what a full decode, EXIF turn
    and resize give, for photos that are downscaled by 1x to 16x (1024 px: decoded at 1/8)."""
    upright = photo(size)
    path = write_jpeg(tmp_path / "photo.jpg", upright, orientation, progressive=progressive)
    img, why, original = decode_fit(path, 64, "stretch")
    assert why == "" and original == size
    with Image.open(path) as full:
        reference = ImageOps.exif_transpose(full.convert("RGB")).resize((64, 64), Image.BILINEAR)
    ref = np.asarray(reference, np.float32).transpose(2, 0, 1)
    assert np.abs(img.astype(np.float32) - ref).mean() < 4.0
    # Upright against the picture itself, not only against PIL's own transpose.
    truth = np.asarray(upright.resize((64, 64), Image.BILINEAR), np.float32).transpose(2, 0, 1)
    assert np.abs(img.astype(np.float32) - truth).mean() < 6.0


@pytest.mark.parametrize("progressive", [False, True], ids=["baseline", "progressive"])
@pytest.mark.parametrize("mode", ["CMYK", "L"])
def test_cmyk_and_grayscale_jpegs_decode_to_upright_rgb(tmp_path: Path, mode: str, progressive: bool) -> None:
    for orientation in (1, 6):
        path = write_jpeg(tmp_path / f"{mode}-{orientation}.jpg", quadrant_picture((640, 480)), orientation,
                          mode=mode, progressive=progressive)
        img, why, original = decode_fit(path, 32, "stretch")
        assert why == "" and original == (640, 480)
        assert_upright(img, gray=mode == "L", tolerance=40.0 if mode == "CMYK" else 30.0)
        gray, _ = decode.image_stats(img)
        assert gray == (mode == "L")


def test_a_damaged_or_odd_orientation_tag_keeps_the_photo(tmp_path: Path) -> None:
    for value in (0, 9, 300):
        path = tmp_path / f"odd-{value}.jpg"
        exif = Image.Exif()
        exif[decode.ORIENTATION_TAG] = value
        quadrant_picture().save(path, "JPEG", exif=exif, quality=92)
        img, why, original = decode_fit(path, 32, "stretch")
        assert why == "" and original == UPRIGHT_SIZE  # kept as stored, not skipped
        assert_upright(img)


# ----------------------------------------------------------------------------- the cache and the doctor's facts


def _mixed_folder(root: Path) -> list[tuple[Path, int, str]]:
    """Two classes of real JPEGs: every orientation, baseline and progressive, RGB, CMYK and gray."""
    made = []
    for i, orientation in enumerate(range(1, 9)):
        for label, mode in (("color", "RGB" if i % 2 else "CMYK"), ("gray", "L")):
            path = write_jpeg(root / label / f"{orientation}.jpg", quadrant_picture((120, 80)), orientation,
                              mode=mode, progressive=bool(i % 2))
            made.append((path, orientation, mode))
    return made


def test_cache_stores_upright_photos_with_their_shown_sizes(tmp_path: Path) -> None:
    _mixed_folder(tmp_path / "photos")
    spec = DatasetSpec(path=str(tmp_path / "photos"), val_fraction=0.25)
    data = load_dataset(spec, 32, "stretch", cache_dir=tmp_path / "cache")
    assert len(data.labels) == 16 and data.info["skipped_images"] == 0
    images = data.images.numpy()
    for row in range(16):
        assert_upright(images[row], gray=data.classes[int(data.labels[row])] == "gray", tolerance=40.0)
    # The doctor's facts read these: the shown size (120x80), the grayscale flag per photo.
    assert set(zip(data.meta["width"].tolist(), data.meta["height"].tolist())) == {(120, 80)}
    assert data.meta["gray"].tolist() == [data.classes[int(y)] == "gray" for y in data.labels]


def test_a_cache_decoded_under_older_rules_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The decoder's rules are in the cache's key: an entry built before EXIF orientation was applied
    (or under any other rules) is not served; the next open rebuilds it and drops the old one."""
    write_jpeg(tmp_path / "photos" / "a" / "1.jpg", quadrant_picture(), 6)
    write_jpeg(tmp_path / "photos" / "b" / "1.jpg", quadrant_picture(), 8)
    spec = DatasetSpec(path=str(tmp_path / "photos"))
    monkeypatch.setattr(sources, "DECODER", "sideways-0")  # what an older release wrote
    old = cache.open_entry(sources.scan(spec), 32, "stretch", tmp_path / "cache")
    assert old.built
    monkeypatch.setattr(sources, "DECODER", decode.DECODER)
    again = cache.open_entry(sources.scan(spec), 32, "stretch", tmp_path / "cache")
    assert again.built and again.path != old.path
    assert not old.path.exists()  # replaced, not kept beside it
    assert cache.open_entry(sources.scan(spec), 32, "stretch", tmp_path / "cache").built is False


# ----------------------------------------------------------------------------- training input and predict


def _up_or_down(root: Path, n: int = 24) -> None:
    """Class "up": the shown photo is bright on top; "down": bright below. Each class is stored under
    orientations 1, 3, 6 and 8 equally, so the stored pixels of the two classes are the same mix:
    only a decoder that reads the orientation can tell them apart."""
    rng = np.random.default_rng(1)
    for label in ("up", "down"):
        for i in range(n):
            arr = rng.normal(70, 20, (40, 40, 3))
            bright = slice(0, 20) if label == "up" else slice(20, 40)
            arr[bright] += 130
            picture = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
            write_jpeg(root / label / f"{i:02d}.jpg", picture, (1, 3, 6, 8)[i % 4], progressive=bool(i % 2))


def test_training_input_and_predict_see_photos_upright(tmp_path: Path) -> None:
    _up_or_down(tmp_path / "photos")
    params = {"lr": 0.01, "width": 8, "depth": 2, "input_size": 16, "epochs": 8, "batch_size": 16,
              "optimizer": "adamw"}
    s = Searched(tmp_path, "upright", dataset={"path": str(tmp_path / "photos"), "val_fraction": 0.25},
                 budget={"n_trials": 1, "max_epochs": 8}, params=params)
    # The training input: every photo upright (its bright half where the viewer shows it).
    data = prepare(s.space.dataset, 16, "stretch", torch.device("cpu"))
    up = data.classes.index("up")
    for x, y in ((data.train_x, data.train_y), (data.val_x, data.val_y)):
        x = x.materialize() if hasattr(x, "materialize") else x
        top, bottom = x[:, :, :8].float().mean(dim=(1, 2, 3)), x[:, :, 8:].float().mean(dim=(1, 2, 3))
        assert torch.equal(top > bottom, y == up)
    # Learnable only when upright (the stored pixels of both classes are the same mix).
    assert s.study.best_value >= 0.9, s.study.best_value

    s.cli("export", "upright", "-o", str(tmp_path / "out"), "--no-onnx")
    files = sorted((tmp_path / "photos").rglob("*.jpg"), key=lambda f: (f.parent.name, f.name))
    val_files = [str(files[i]) for i in load_dataset(s.space.dataset).val.tolist()]
    rows = json.loads(_invoke("predict", str(tmp_path / "out"), *val_files, "--json"))
    right = sum(r["class"] == Path(r["path"]).parent.name for r in rows)
    assert right >= 0.9 * len(rows), rows
    # predict decodes the files exactly as the cache did for training: same probabilities.
    from search.artifacts.bundle import load_core

    bundle = load_core(tmp_path / "out")
    expected = bundle.probabilities(data.val_x.materialize() if hasattr(data.val_x, "materialize") else data.val_x)
    got = torch.tensor([[r["probabilities"][c] for c in bundle.classes] for r in rows])
    assert (got - expected).abs().max().item() < 1e-6
