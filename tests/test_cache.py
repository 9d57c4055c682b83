"""The persistent dataset cache: built once, reused, rebuilt only when files change, safe under
concurrency and kills; CSV manifests; unreadable images skipped and counted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from conftest import bomb_png as _bomb
from search.cli import main
from search.core.config import TrialConfig
from search.data import cache, datasets
from search.data.datasets import MappedImages, Prepared, load_dataset, prepare
from search.data.sources import scan
from search.core.errors import DataError, SpaceError
from search.space.parse import DatasetSpec, parse_space
from search.train.loop import train

ROOT = Path(__file__).resolve().parents[1]


def _png(path: Path, color: tuple[int, int, int], seed: int, size: tuple[int, int] = (12, 10)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(color) + rng.integers(-30, 30, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(path)


def _tree(root: Path, per_class: int = 6) -> Path:
    for c, color in (("cat", (200, 50, 50)), ("dog", (50, 50, 200))):
        for i in range(per_class):
            _png(root / c / f"{i}.png", color, seed=hash((c, i)) % 2**32)
    return root


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv(cache.CACHE_ENV, str(d))
    datasets.clear_cache()
    yield d
    datasets.clear_cache()


def _open(root: Path, size: int = 16, aspect: str = "stretch") -> cache.Entry:
    return cache.open_entry(scan(DatasetSpec(path=str(root))), size, aspect)


def _no_build(*args: object) -> None:
    raise AssertionError("the cache was rebuilt")


def test_built_once_then_mapped_without_decoding(tmp_path: Path, cache_dir: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    root = _tree(tmp_path / "data")
    first = _open(root)
    assert first.built and first.images.shape == (12, 3, 16, 16)
    assert str(first.path).startswith(str(cache_dir))  # under the cache dir, not the data or working tree
    man = json.loads(first.path.with_suffix(".json").read_text())
    assert man["shape"] == [12, 3, 16, 16] and man["classes"] == ["cat", "dog"] and man["skipped"] == 0
    # A plain NumPy file anyone can read.
    assert np.array_equal(np.load(first.path, mmap_mode="r"), first.images)

    monkeypatch.setattr(cache, "decode_job", _no_build)
    monkeypatch.setattr(cache, "_build", _no_build)
    again = _open(root)
    assert not again.built and np.array_equal(again.images, first.images)
    data = load_dataset(DatasetSpec(path=str(root)), 16, "stretch")
    assert not data.info["cache_built"] and len(data.labels) == 12
    assert isinstance(data.images.numpy(), np.ndarray) and not data.images.numpy().flags.owndata


def test_only_file_changes_rebuild(tmp_path: Path, cache_dir: Path) -> None:
    root = _tree(tmp_path / "data")
    first = _open(root)
    (root / "dog" / "notes.txt").write_text("not an image: ignored")
    assert not _open(root).built
    assert not cache.open_entry(scan(DatasetSpec(path=str(root), val_fraction=0.3)), 16, "stretch").built

    _png(root / "cat" / "new.png", (200, 50, 50), seed=99)  # added
    added = _open(root)
    assert added.built and added.images.shape[0] == 13
    (root / "cat" / "new.png").unlink()  # removed
    assert _open(root).built
    st = os.stat(root / "dog" / "0.png")
    os.utime(root / "dog" / "0.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched
    touched = _open(root)
    assert touched.built and np.array_equal(touched.images, first.images)
    assert not _open(root).built
    # Replaced entries are deleted: one entry per size and aspect stays.
    assert len(list(touched.path.parent.glob("s16-stretch-*.npy"))) == 1
    assert _open(root, 16, "pad").built and _open(root, 24).built  # other sizes/aspects: their own entries


SCRIPT = """
import json, sys, time
import search.data.cache as c
from search.data.sources import scan
from search.space.parse import DatasetSpec
root, delay, start_at = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
c.CHUNK = 2
original = c.decode_job
def slow(job):
    time.sleep(delay)
    return original(job)
c.decode_job = slow
while time.time() < start_at:
    time.sleep(0.001)
e = c.open_entry(scan(DatasetSpec(path=root)), 16, "stretch")
print(json.dumps({"built": e.built, "sum": int(e.images.astype("int64").sum())}))
"""


def _spawn(root: Path, delay: float, start_at: float) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(root), str(delay), str(start_at)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_three_processes_starting_together_build_once(tmp_path: Path, cache_dir: Path) -> None:
    root = _tree(tmp_path / "data")
    start_at = time.time() + 3.0
    procs = [_spawn(root, 0.15, start_at) for _ in range(3)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(r["built"] for r in results) == [False, False, True]
    assert len({r["sum"] for r in results}) == 1
    assert not list(cache_dir.rglob("*.tmp-*"))


def test_killed_build_leaves_nothing_valid_and_next_start_rebuilds(tmp_path: Path, cache_dir: Path) -> None:
    root = _tree(tmp_path / "data")
    proc = _spawn(root, 1.0, 0)
    deadline = time.time() + 60
    while not list(cache_dir.rglob("*.tmp-*")) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # decoding is under way
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert list(cache_dir.rglob("*.tmp-*")), "the kill came too late to test anything"
    assert not list(cache_dir.rglob("*.json")) and not list(cache_dir.rglob("*.npy"))
    entry = _open(root)
    assert entry.built and entry.images.shape[0] == 12
    assert not list(cache_dir.rglob("*.tmp-*"))


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_cache_file_is_detected_and_rebuilt(tmp_path: Path, cache_dir: Path, damage: str,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    root = _tree(tmp_path / "data")
    good = np.array(_open(root).images)
    path = _open(root).path
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        path.write_bytes(bytes(raw[: len(raw) - 700]))
    else:
        raw[len(raw) // 2] ^= 0xFF
        path.write_bytes(bytes(raw))
    entry = _open(root)
    assert entry.built and np.array_equal(entry.images, good)
    assert ("truncated" if damage == "truncate" else "checksum mismatch") in caplog.text
    assert "rebuilding" in caplog.text


def test_cached_training_equals_in_ram_training_bit_for_bit(cache_dir: Path) -> None:
    spec = DatasetSpec(name="digits", limit=300)
    config = TrialConfig(epochs=2, seed=3, input_size=12, width=4, depth=2, batch_size=32, augment="standard",
                         lr=0.01)
    mapped = prepare(spec, 12, "stretch", torch.device("cpu"))
    assert isinstance(mapped.train_x, MappedImages)
    in_ram = Prepared(*(x.materialize() if isinstance(x, MappedImages) else x.clone() for x in
                        (mapped.train_x, mapped.train_y, mapped.val_x, mapped.val_y, mapped.test_x, mapped.test_y)),
                      mapped.classes, mapped.size)
    a = train(config, spec, device=torch.device("cpu"), data=mapped)
    b = train(config, spec, device=torch.device("cpu"), data=in_ram)
    assert [h.train_loss for h in a.history] == [h.train_loss for h in b.history]
    assert a.values == b.values and a.val.confusion == b.val.confusion
    for (k, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(x, y), k
    # And the cache holds exactly what the old in-RAM path computed: the generator's images, resized
    # (only the dataset.limit subsample: it is drawn before anything is resized or cached).
    raw, labels, _ = datasets.BUILTIN_DATASETS["digits"](0)
    from search.data.sources import limit_indices
    from search.data.transforms import resize_all

    keep = torch.from_numpy(limit_indices(labels.numpy(), 300, spec.split_seed))
    full = load_dataset(spec, 12, "stretch")
    assert abs(len(full.labels) - 300) <= len(full.classes)
    assert torch.equal(full.images, resize_all(raw[keep], 12, "stretch")) and torch.equal(full.labels, labels[keep])


def test_unreadable_images_are_skipped_and_counted(tmp_path: Path, cache_dir: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    root = _tree(tmp_path / "data")
    (root / "cat" / "broken.png").write_bytes(b"not a png at all")
    (root / "cat" / "empty.jpg").write_bytes(b"")
    _bomb(root / "dog" / "bomb.png")
    data = load_dataset(DatasetSpec(path=str(root)), 16, "pad")
    assert data.info["skipped_images"] == 3 and len(data.labels) == 12
    named = {Path(p).name: why for p, why in data.info["skipped_files"]}
    assert set(named) == {"broken.png", "empty.jpg", "bomb.png"}
    assert "decompression bomb" in named["bomb.png"]
    assert "bomb.png" in caplog.text and "Traceback" not in caplog.text
    # The cache command counts them too, and runs through the same path.
    out = CliRunner().invoke(main, ["cache", str(root), "--input-size", "16", "--aspect", "pad"])
    assert out.exit_code == 0 and "3 unreadable skipped" in out.output
    assert [line.split()[0] for line in out.output.splitlines() if "unreadable skipped" in line] == ["ok"]


def _csv(tmp_path: Path, rows: list[str]) -> Path:
    _tree(tmp_path / "images")
    path = tmp_path / "labels.csv"
    path.write_text("\n".join(["path,label,split", *rows]) + "\n")
    return path


def test_csv_manifest_is_a_dataset(tmp_path: Path, cache_dir: Path) -> None:
    rows = [f"{c}/{i}.png,{c},{'val' if i < 2 else ''}" for c in ("cat", "dog") for i in range(6)]
    path = _csv(tmp_path, rows)
    space = parse_space({"study": "s", "dataset": {"csv": "labels.csv", "root": "images"}}, base_dir=tmp_path)
    assert space.dataset.csv == str(path) and space.dataset.root == str(tmp_path / "images")
    data = load_dataset(space.dataset, 16, "stretch")
    assert data.classes == ["cat", "dog"] and data.class_counts("val") == [2, 2]  # from the split column
    assert len(data.test) > 0 and len(data.train) + len(data.test) == 8


def test_csv_problems_name_their_rows(tmp_path: Path, cache_dir: Path) -> None:
    path = _csv(tmp_path, ["cat/0.png,cat,", "cat/nope.png,cat,", "dog/0.png,,", "cat/0.png,cat,",
                           "dog/1.png,dog,holdout"])
    with pytest.raises(DataError) as err:
        scan(DatasetSpec(csv=str(path), root=str(tmp_path / "images")))
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(str(path))
    assert "row 3: unknown path cat/nope.png" in msg and "row 4: empty label" in msg
    assert "row 5: duplicate of row 2" in msg and "row 6: split 'holdout'" in msg
    # Before any trial, from the command line: one line, exit 2.
    space = tmp_path / "s.yaml"
    space.write_text(f"study: s\ndataset: {{csv: {path}, root: {tmp_path / 'images'}}}\nbudget: {{n_trials: 1}}\n")
    out = CliRunner().invoke(main, ["run", str(space), "--storage", f"sqlite:///{tmp_path}/s.db", "--device", "cpu"])
    assert out.exit_code == 2 and "row 3" in out.output and "Traceback" not in out.output


@pytest.mark.parametrize("dataset,message", [
    ({"csv": "x.csv", "path": "y"}, "exactly one of"),
    ({"path": "y", "root": "z"}, "only goes with csv"),
    ({"csv": "missing.csv"}, "no such file"),
])
def test_csv_keys_are_checked_by_the_space_parser(tmp_path: Path, dataset: dict, message: str) -> None:
    with pytest.raises(SpaceError, match=message):
        parse_space({"study": "s", "dataset": dataset}, base_dir=tmp_path)


def test_cache_command_lists_and_clears(tmp_path: Path, cache_dir: Path) -> None:
    root = _tree(tmp_path / "data")
    runner = CliRunner()
    built = runner.invoke(main, ["cache", str(root), "--input-size", "16,24", "--cache-dir", str(cache_dir)])
    assert built.exit_code == 0, built.output
    states = [line.split()[0] for line in built.output.splitlines() if line.split()[0] in ("built", "ok")]
    assert states == ["built", "built"]
    listed = json.loads(runner.invoke(main, ["cache", "--list", "--json"]).output)
    assert len(listed) == 1 and {e["size"] for e in listed[0]["entries"]} == {16, 24}
    assert listed[0]["bytes"] > 2 * 12 * 3 * 16 * 16
    assert "MB" in runner.invoke(main, ["cache", "--list"]).output
    cleared = runner.invoke(main, ["cache", "--clear", str(root)])
    assert cleared.exit_code == 0 and "freed" in cleared.output
    assert json.loads(runner.invoke(main, ["cache", "--list", "--json"]).output) == []
    assert runner.invoke(main, ["cache"]).exit_code == 2


def test_folder_listing_is_in_path_component_order(tmp_path: Path) -> None:
    """The walk's order (part of the cache key) is what sorting by Path.parts gives, links not followed."""
    from search.data.sources import _files

    for rel in ("b.jpg", "a-b/x.png", "a/z.jpg", "a/sub/y.jpg", "a/.hidden/h.jpg", "a/notes.txt", "A.JPG"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    (tmp_path / "a" / "loop").symlink_to(tmp_path, target_is_directory=True)
    found = _files(tmp_path)
    expected = sorted((str(tmp_path / r) for r in ("b.jpg", "a-b/x.png", "a/z.jpg", "a/sub/y.jpg", "A.JPG")),
                      key=lambda p: Path(p).parts)
    assert found == expected


def _mapped_rss_kb(path: Path) -> int:
    """This process's resident kB of its mappings of ``path`` (/proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if line[:1].isalnum() and "-" in line.split(" ", 1)[0]:  # a mapping's header line
            inside = line.endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc")
def test_a_worker_keeps_only_a_bounded_share_of_the_map_resident(tmp_path: Path) -> None:
    path = tmp_path / "images.npy"
    data = np.random.default_rng(0).integers(0, 255, (512, 3, 32, 32), dtype=np.uint8)  # 1.5 MB
    np.save(path, data)
    order = torch.randperm(len(data))

    def read_all(budget: int | None) -> tuple[int, torch.Tensor]:
        mm = np.load(path, mmap_mode="c")
        pages = cache.MappedPages(mm, budget) if budget else None
        images = MappedImages(torch.from_numpy(mm), torch.arange(len(data)), pages)
        got = torch.cat([images[order[i:i + 64]] for i in range(0, len(data), 64)])
        rss = _mapped_rss_kb(path)
        del images, mm
        return rss, got

    whole, plain = read_all(None)
    bounded, dropped = read_all(256 << 10)
    assert torch.equal(plain, torch.from_numpy(data)[order]) and torch.equal(dropped, plain)  # same data
    assert whole >= 1400  # every page read stays resident without a budget
    assert bounded <= 256 + 200  # at most the budget (plus one batch) with one


def test_evaluation_gathers_a_mapped_split_batch_by_batch_never_whole(cache_dir: Path) -> None:
    from search.data.color import make_preprocess
    from search.models.factory import create_model
    from search.train.loop import predict

    data = prepare(DatasetSpec(name="digits", limit=200), None, "stretch", torch.device("cpu"))
    assert isinstance(data.val_x, MappedImages)

    class Whole(MappedImages):
        def materialize(self) -> torch.Tensor:
            raise AssertionError("the whole split was gathered")

    val = Whole(data.val_x.base, data.val_x.index)
    model = create_model(TrialConfig(width=4, depth=1), 3, len(data.classes), data.size)
    pre = make_preprocess("rgb", "none", False, data.train_x)
    logits = predict(model, pre, val, torch.device("cpu"))
    assert logits.shape == (len(val), len(data.classes))
