"""The first week with real data, as a new user runs it: doctor -> run -> report -> export -> train ->
predict on a folder with train/val/test sub-folders and one corrupt file, each step's output read
as that user reads it (issue 24)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
import yaml
from click.testing import CliRunner
from PIL import Image

from conftest import ROOT
from search.cli import main
from search.data.datasets import clear_cache

COLORS = {"brick": (180, 60, 40), "grass": (50, 160, 60), "sky": (70, 120, 220)}


def photos(root: Path, per_split: dict[str, int] | None = None) -> Path:
    """``root/{train,val,test}/<class>/*.png``: 12x12 noise with a colored square; one corrupt file."""
    rng = np.random.default_rng(0)
    for split, n in (per_split or {"train": 16, "val": 6, "test": 6}).items():
        for c, color in COLORS.items():
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 90, (12, 12, 3)).astype(np.uint8)
                img[3:9, 3:9] = color
                Image.fromarray(img).save(root / split / c / f"{i:02d}.png")
    first = next(iter(per_split or {"train": 0}))
    (root / first / "brick" / "broken.png").write_bytes(b"not an image")
    return root


def cli(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.output


def test_doctor_run_report_export_train_predict_on_a_folder(workdir: Path) -> None:
    data = photos(workdir / "photos")
    broken = str(data / "train" / "brick" / "broken.png")

    # doctor: names the corrupt file; its space uses the folder's own split, says "default objective".
    text = cli("doctor", str(data), "--epochs", "2", "--no-probe", "-o", "space.yaml", "--n-trials", "2",
               "--study", "photos")
    assert f"[corrupt] 1 unreadable image(s) skipped: {broken} (" in text and "full list in" in text
    assert "validation and test from the dataset's own split" in text
    space_text = (workdir / "space.yaml").read_text()
    doc = yaml.safe_load(space_text)
    assert "val_fraction" not in doc["dataset"] and "test_fraction" not in doc["dataset"]
    assert "its own validation and test splits (val/ and test/ folders) are used" in space_text
    assert "# the default objective" in space_text and "the objective you asked for" not in space_text
    assert "in each of the 3 classes" in space_text  # the smallest classes named, none picked among equals
    assert doc["enqueue"] and doc["doctor"]["baseline"]["classes"] == sorted(COLORS)

    # run: names the corrupt file on the console too, with where the full list is.
    clear_cache()  # as a new process: `run` opens the dataset (and names what it skipped) afresh
    text = cli("run", "space.yaml", "--device", "cpu")
    assert f"1 unreadable image(s) skipped: {broken} (" in text
    queued = len(doc["enqueue"])  # the recipe, then the portfolio's entries that fit
    assert (f"{queued} trial(s) so far (waiting {queued}); budget 2: 0 used, 2 left; "
            "next: trial 0 (enqueued from the space's enqueue:)") in text

    # report: the result section compares with the doctor's baseline.
    cli("report", "photos", "-o", "report.html", "--no-png")
    page = (workdir / "report.html").read_text()
    result = page[page.index('<section id="result">'):]
    result = result[:result.index("</section>")]
    assert "the doctor&#x27;s baseline" in result and "gain" in result and "Next steps" in result

    # export: config.yaml and best.yaml carry no enqueue: (nor the doctor's record); train and run take them.
    out = cli("export", "photos", "-o", "bundle/", "--device", "cpu")
    assert "torch_export: max |logit diff|" in out
    cli("export", "photos", "-o", "best.yaml")
    for name in ("bundle/config.yaml", "best.yaml"):
        exported = yaml.safe_load((workdir / name).read_text())
        assert "enqueue" not in exported and "doctor" not in exported
    assert "reproduced within 1e-06" in cli("train", "bundle/config.yaml", "--device", "cpu")
    assert "complete 1" in cli("run", "best.yaml", "--device", "cpu")

    # The bundle's files share one mode; its torch.export file loads without a deprecation warning.
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (workdir / "bundle").iterdir()}
    assert len(set(modes.values())) == 1, modes
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        program = torch.export.load(str(workdir / "bundle" / "model.pt2")).module()
    assert program(torch.zeros(2, 3, 12, 12, dtype=torch.uint8)).shape == (2, 3)

    # predict: a corrupt file among the test images is skipped and named; the others are predicted.
    (data / "test" / "sky" / "zz-bad.png").write_bytes(b"nope")
    result = CliRunner().invoke(main, ["predict", "bundle", str(data / "test"), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 18 and all(r["class"] in COLORS for r in rows)
    assert f"skipped {data / 'test' / 'sky' / 'zz-bad.png'}: not a readable image" in result.stderr
    assert "1 of 19 image(s) unreadable and skipped" in result.stderr


def test_predict_exit_rule_and_a_closed_pipe(tmp_path: Path) -> None:
    """Nothing readable: exit 2, one line; --strict: the first unreadable file stops it; a reader that
    goes away (| head) ends predict quietly with SIGPIPE's status, no traceback."""
    from search.artifacts.bundle import from_training, write_bundle
    from search.core.config import TrialConfig
    from search.data.color import make_preprocess
    from search.models.factory import create_model

    config = TrialConfig(width=4, depth=1, input_size=12, seed=0)
    torch.manual_seed(0)
    model = create_model(config, 3, 3, 12, None)
    pre = make_preprocess("rgb", "none", False, torch.zeros(2, 3, 12, 12, dtype=torch.uint8))
    write_bundle(from_training(model, pre, config, sorted(COLORS), 12, 256), tmp_path / "bundle", onnx=False)
    data = photos(tmp_path / "photos", {"test": 4})
    bad = data / "test" / "brick" / "broken.png"

    result = CliRunner().invoke(main, ["predict", str(tmp_path / "bundle"), str(bad)])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and f"{bad}: not a readable image" in result.output
    result = CliRunner().invoke(main, ["predict", str(tmp_path / "bundle"), str(data), "--strict"])
    assert result.exit_code == 2 and "broken.png: not a readable image" in result.output
    result = CliRunner().invoke(main, ["predict", str(tmp_path / "bundle"), str(data)])
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 12

    # Far more lines than a pipe buffers: the writer meets the closed pipe mid-way.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "search.cli", "predict", str(tmp_path / "bundle"),
                             *[str(data / "test")] * 250], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stdout.readline().strip()
    proc.stdout.close()  # `| head -1`
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 141, err.decode()
    assert b"Traceback" not in err and b"BrokenPipeError" not in err
