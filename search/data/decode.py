"""Decoding image files to fixed-size uint8 arrays: the one path for the cache builder and ``predict``.

Only numpy and PIL are imported here, so the cache's build processes start fast. JPEGs are
decoded in draft mode (the decoder's own 1/2, 1/4, 1/8 downscaling) straight to at least the
target size, then resized with PIL's antialiasing filter.

Every image is turned upright by its EXIF orientation tag (a phone photo stored sideways with tag 6
is decoded as it is shown), after the draft decode: the draft asks for a square of at least the
target size, which a quarter turn does not change. The sizes reported (headers, ``original``) are
the upright ones. :data:`DECODER` names these rules; the dataset cache's key includes it, so a
cache decoded under other rules is rebuilt.
"""

from __future__ import annotations

import hashlib
import os
import stat
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}
ASPECTS = ("stretch", "pad")
# The decoding rules, part of the dataset cache's key (change it when decoded pixels change).
DECODER = "exif-upright-1"
ORIENTATION_TAG = 0x0112
# EXIF orientation -> the transpose that shows the image upright (the table of ImageOps.exif_transpose).
_UPRIGHT = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE", 6: "ROTATE_270",
            7: "TRANSVERSE", 8: "ROTATE_90"}


def _why(exc: BaseException) -> str:
    from PIL import Image

    if isinstance(exc, Image.DecompressionBombError):
        return f"decompression bomb (over PIL's pixel limit): {exc}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def orientation(im: Any, loaded: bool = False) -> int:
    """The EXIF orientation (1-8) of an opened image; 1 when it has none or it cannot be read.

    Before ``im`` is ``loaded``, a PNG's eXIf chunk is known only when it precedes the pixels
    (looking further would decode them): a header read then says 1, as does any unreadable or odd
    tag (the image is kept as stored rather than skipped).
    """
    try:
        if im.format == "PNG" and "exif" not in im.info and not loaded:
            return 1
        value = im.getexif().get(ORIENTATION_TAG, 1)
    except Exception:  # noqa: BLE001 - a damaged EXIF block must not make the photo unreadable
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def upright(im: Any, turn: int) -> Any:
    """``im`` transposed as EXIF orientation ``turn`` says it is shown."""
    from PIL import Image

    method = _UPRIGHT.get(turn)
    return im if method is None else im.transpose(getattr(Image.Transpose, method))


def upright_size(width: int, height: int, turn: int) -> tuple[int, int]:
    """The shown (width, height) of a stored ``width`` x ``height`` image: swapped by orientations 5-8."""
    return (height, width) if turn >= 5 else (width, height)


def not_regular(path: str | Path) -> str | None:
    """Why ``path`` cannot be read as an image file without opening it (a FIFO would block forever,
    a dangling or looping link fails): None for a regular file (links to one are followed)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return _why(exc)
    if stat.S_ISREG(mode):
        return None
    kind = ("a folder" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "not a regular file")
    return f"not a regular file: {kind}"


def read_header(path: str | Path) -> tuple[int, int, str]:
    """(width, height, "") as shown (EXIF orientation applied) from the file header without decoding
    pixels; (-1, -1, reason) if unreadable."""
    from PIL import Image

    why = not_regular(path)
    if why is not None:
        return -1, -1, why
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = upright_size(*im.size, orientation(im))
    except Exception as exc:  # noqa: BLE001 - any unreadable file is skipped and counted, never a traceback
        return -1, -1, _why(exc)
    return int(w), int(h), ""


def decode_fit(path: str | Path, size: int, aspect: str) -> tuple[np.ndarray | None, str, tuple[int, int]]:
    """A file as (3, size, size) uint8 RGB, upright (``pad`` letterboxes), with its reason ("" when
    read) and original (width, height) as shown; (None, reason, (-1, -1)) when unreadable."""
    from PIL import Image

    if aspect not in ASPECTS:
        raise ValueError(f"unknown aspect {aspect!r}; allowed: {', '.join(ASPECTS)}")
    why = not_regular(path)
    if why is not None:
        return None, why, (-1, -1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as src:
                stored = (int(src.size[0]), int(src.size[1]))
                if src.format == "JPEG":
                    # Decode at 1/2, 1/4 or 1/8 scale while both sides stay >= size: a square
                    # request, so it holds whichever way the photo is then turned.
                    src.draft("RGB", (size, size))
                im = src.convert("RGB")
                turn = orientation(src, loaded=True)  # after loading: a PNG's eXIf chunk may follow its pixels
                im = upright(im, turn)
                original = upright_size(*stored, turn)
                w, h = im.size
                if aspect == "stretch" or w == h:
                    out = im if (w, h) == (size, size) else im.resize((size, size), Image.BILINEAR)
                else:
                    scale = size / max(w, h)
                    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
                    small = im.resize((nw, nh), Image.BILINEAR)
                    out = Image.new("RGB", (size, size))
                    out.paste(small, ((size - nw) // 2, (size - nh) // 2))
                arr = np.asarray(out, dtype=np.uint8)
    except Exception as exc:  # noqa: BLE001 - corrupt, truncated, bombs: skipped and counted by the caller
        return None, _why(exc), (-1, -1)
    return np.ascontiguousarray(arr.transpose(2, 0, 1)), "", original


def image_stats(img: np.ndarray) -> tuple[bool, int]:
    """(grayscale, 63-bit digest) of one (3, S, S) image, for the doctor's facts."""
    gray = bool(np.array_equal(img[0], img[1]) and np.array_equal(img[1], img[2]))
    digest = int.from_bytes(hashlib.blake2b(img.tobytes(), digest_size=8).digest(), "little") >> 1
    return gray, digest


def headers_job(files: Sequence[str]) -> list[tuple[int, int, str]]:
    return [read_header(f) for f in files]


def decode_job(job: tuple[str, int, Sequence[str], int, str]) -> list[tuple[bool, str, int, int, bool, int]]:
    """Decode ``files`` into rows ``start..`` of the .npy file being built.

    Per file: (ok, why, width, height, grayscale, digest); pixels go straight into the shared file.
    """
    out_path, start, files, size, aspect = job
    arr = np.load(out_path, mmap_mode="r+")
    results = []
    for k, f in enumerate(files):
        img, why, (w, h) = decode_fit(f, size, aspect)
        if img is None:
            results.append((False, why, -1, -1, False, 0))
            continue
        arr[start + k] = img
        results.append((True, "", w, h, *image_stats(img)))
    arr.flush()
    del arr
    return results


def digest_job(job: tuple[Sequence[str], int, str]) -> list[int]:
    """Each file's pixel digest at ``size`` and ``aspect`` (-1 when unreadable): ``cache --verify``."""
    files, size, aspect = job
    out = []
    for f in files:
        img, _, _ = decode_fit(f, size, aspect)
        out.append(-1 if img is None else image_stats(img)[1])
    return out
