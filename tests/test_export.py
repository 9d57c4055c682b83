"""From best trial to production: kept trials' files per keep policy, export bundle, train, predict."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import torch
import yaml
from click.testing import CliRunner
from optuna.trial import TrialState
from PIL import Image

from conftest import bomb_png, tiny_space, write_space
from search.artifacts.bundle import CORE_FILES, Bundle, load_core
from search.artifacts.store import open_store
from search.artifacts.trial_files import TrialFiles
from search.core.locations import parse_location
from search.storage import internals
from search.cli import main
from search.data.datasets import load_dataset, prepare
from search.space.parse import load_space
from search.train.loop import evaluate


def _invoke(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.output


def _ranked(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    return sorted(done, key=lambda t: (-t.value, t.number))


class Searched:
    """A finished tiny study, its storage and its artifact store (a directory)."""

    def __init__(self, root: Path, name: str, **overrides: Any) -> None:
        self.root = root
        self.name = name
        self.storage = f"sqlite:///{root}/studies.db"
        self.artifacts = root / "store"
        self.space_file = write_space(root / f"{name}.yaml", tiny_space(name, **overrides))
        _invoke("run", str(self.space_file), "--storage", self.storage, "--artifacts", str(self.artifacts),
                "--device", "cpu")
        self.study = optuna.load_study(study_name=name, storage=self.storage)
        self.space = load_space(self.space_file)

    def cli(self, command: str, *args: str, code: int = 0) -> str:
        return _invoke(command, *args, "--storage", self.storage, "--artifacts", str(self.artifacts), code=code)

    def files(self) -> TrialFiles:
        """The study's kept files, read back as any command does."""
        study = optuna.load_study(study_name=self.name, storage=self.storage)
        return TrialFiles(open_store(parse_location(str(self.artifacts))), internals.storage_of(study),
                          internals.study_id(study))

    def kept(self) -> list[int]:
        """Numbers of the trials that keep a model."""
        files = self.files()
        return [t.number for t in self.study.get_trials(deepcopy=False) if files.has_model(t)]

    def kept_model(self, number: int, folder: Path) -> Bundle:
        """Trial ``number``'s kept model, downloaded into ``folder``."""
        self.files().download(self.study.trials[number], CORE_FILES, folder)
        return load_core(folder)


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Searched:
    # Fixed lab color, whitening and a resize (digits are 8x8) so export and predict exercise
    # the whole preprocessing; lr/optimizer/batch size are searched.
    return Searched(
        tmp_path_factory.mktemp("export"), "exp",
        dataset={"name": "digits", "limit": 300},
        budget={"n_trials": 4, "max_epochs": 2},
        keep="top_k", keep_top_k=2,
        params={"lr": {"float": [0.003, 0.05], "log": True}, "optimizer": {"choices": ["adamw", "sgd"]},
                "batch_size": {"choices": [32, 64]}, "width": 4, "depth": 2, "color": "lab",
                "augment": "whiten", "input_size": 12},
    )


@pytest.fixture(scope="module")
def exported(searched: Searched) -> tuple[Path, str]:
    out = searched.root / "bundle"
    text = searched.cli("export", searched.name, "-o", f"{out}/")
    return out, text


def _exported_trial(searched: Searched, out: Path) -> optuna.trial.FrozenTrial:
    """The trial the bundle holds: a best one (ties on accuracy are possible on 54 images)."""
    number = yaml.safe_load((out / "config.yaml").read_text())["source"]["trial"]
    trial = searched.study.trials[number]
    assert trial.value == searched.study.best_value
    return trial


def test_models_are_kept_for_the_top_k_trials_only(searched: Searched) -> None:
    ranked = _ranked(searched.study)
    assert len(ranked) == 4
    assert searched.kept() == sorted(t.number for t in ranked[:2])
    # A kept model is the trial's model: it scores the recorded validation metrics again.
    data = load_dataset(searched.space.dataset)
    for t in ranked[:2]:
        bundle = searched.kept_model(t.number, searched.root / f"kept-{t.number}")
        prepared = prepare(searched.space.dataset, bundle.input_size, bundle.aspect, torch.device("cpu"))
        metrics = evaluate(bundle.model, bundle.preprocess, prepared.val_x, prepared.val_y, len(data.classes),
                           torch.device("cpu"))
        assert metrics.confusion == t.user_attrs["val"]["confusion"]
        assert set(t.user_attrs["artifacts"]["files"]) == {"model.safetensors", "model.json", "preprocessing.json",
                                                           "learning_curve.png", "confusion_matrix.png", "metrics.json"}


def test_export_writes_a_complete_bundle(searched: Searched, exported: tuple[Path, str]) -> None:
    out, text = exported
    best = _exported_trial(searched, out)
    assert f"exported trial {best.number}" in text and f"weights: kept model of trial {best.number}" in text
    names = {p.name for p in out.iterdir()}
    assert {"config.yaml", "model.safetensors", "model.json", "preprocessing.json", "model.torchscript.pt",
            "model.onnx"} <= names

    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["source"] == {"study": searched.name, "trial": best.number, "values": {"accuracy": best.value},
                                "split": "validation"}
    assert config["params"]["seed"] == best.user_attrs["config"]["seed"]
    assert all(not isinstance(v, dict) for v in config["params"].values())  # every param fixed
    assert "storage" not in json.dumps(config)

    pre = json.loads((out / "preprocessing.json").read_text())
    assert pre["input_size"] == 12 and pre["aspect"] == "stretch" and pre["color"] == "lab" and pre["whiten"]
    assert pre["class_names"] == [str(i) for i in range(10)] and len(pre["mean"]) == len(pre["std"]) == 3
    model = json.loads((out / "model.json").read_text())
    assert model["architecture"]["config"] == best.user_attrs["config"]
    assert model["metrics"]["validation"]["accuracy"] == best.value


def _val_images(searched: Searched) -> tuple[torch.Tensor, torch.Tensor]:
    """Validation images at their native 8x8, uint8 RGB, and labels."""
    data = load_dataset(searched.space.dataset)
    return data.images[data.val], data.labels[data.val]


def test_torchscript_and_onnx_match_pytorch(searched: Searched, exported: tuple[Path, str]) -> None:
    out, _ = exported
    bundle = load_core(out)
    prepared = prepare(searched.space.dataset, 12, "stretch", torch.device("cpu"))
    images = prepared.val_x
    with torch.no_grad():
        reference = bundle.production_module()(images)

    # Run the TorchScript file in a Python that cannot import this package.
    np.save(out.parent / "images.npy", images.numpy())
    script = (
        "import sys, json; sys.modules['search'] = None\n"
        "import numpy as np, torch\n"
        "extra = {'preprocessing.json': ''}\n"
        f"m = torch.jit.load({str(out / 'model.torchscript.pt')!r}, _extra_files=extra)\n"
        f"x = torch.from_numpy(np.load({str(out.parent / 'images.npy')!r}))\n"
        f"np.save({str(out.parent / 'ts.npy')!r}, m(x).detach().numpy())\n"
        "print(json.loads(extra['preprocessing.json'])['class_names'])\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=out.parent)
    assert done.returncode == 0, done.stderr
    assert "'9'" in done.stdout
    ts = torch.from_numpy(np.load(out.parent / "ts.npy"))
    assert (ts - reference).abs().max().item() < 1e-4

    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], {"image": images.float().div(255.0).numpy()})[0]
    assert np.abs(logits - reference.numpy()).max() < 1e-4
    assert (torch.from_numpy(logits).argmax(1) == reference.argmax(1)).all()


def test_predict_on_image_files_matches_the_in_process_model(searched: Searched,
                                                             exported: tuple[Path, str]) -> None:
    out, _ = exported
    images, labels = _val_images(searched)
    folder = searched.root / "images"
    for i, (img, label) in enumerate(zip(images, labels)):
        (folder / str(int(label))).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / str(int(label)) / f"{i:03d}.png")

    rows = json.loads(_invoke("predict", str(out), str(folder), "--json"))
    assert len(rows) == len(labels)
    # In process: the trial's kept model on the validation split exactly as training prepared it.
    best = _exported_trial(searched, out)
    bundle = searched.kept_model(best.number, searched.root / "kept-for-predict")
    prepared = prepare(searched.space.dataset, 12, "stretch", torch.device("cpu"))
    expected = bundle.probabilities(prepared.val_x)
    order = sorted(range(len(labels)), key=lambda i: f"{int(labels[i])}/{i:03d}")  # predict's folder order
    for row, i in zip(rows, order):
        assert row["class"] == str(int(expected[i].argmax()))
        assert abs(row["probability"] - float(expected[i].max())) < 1e-6
        assert abs(sum(row["probabilities"].values()) - 1.0) < 1e-5
    correct = sum(row["class"] == Path(row["path"]).parent.name for row in rows)
    assert correct / len(rows) == best.value  # the recorded validation accuracy, from files on disk

    table = _invoke("predict", str(out), str(folder / "3"))
    assert len(table.strip().splitlines()) == int((labels == 3).sum())


def test_predict_names_a_decompression_bomb_in_one_line(searched: Searched, exported: tuple[Path, str]) -> None:
    out, _ = exported
    bomb = searched.root / "bomb.png"
    bomb_png(bomb)
    result = CliRunner().invoke(main, ["predict", str(out), str(bomb)])
    assert result.exit_code == 2, result.output
    assert f"{bomb}: not a readable image (decompression bomb" in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_exported_config_retrains_to_the_trial_score(searched: Searched, exported: tuple[Path, str]) -> None:
    out, _ = exported
    best = _exported_trial(searched, out)
    retrained = searched.root / "retrained"
    text = _invoke("train", str(out / "config.yaml"), "--device", "cpu", "-o", str(retrained), "--no-onnx")
    assert "validation (held out)" in text and "reproduced within 1e-06" in text
    model = json.loads((retrained / "model.json").read_text())
    assert abs(model["values"]["accuracy"] - best.value) <= 1e-6
    assert model["metrics"]["validation"]["confusion"] == best.user_attrs["val"]["confusion"]
    assert load_core(retrained).classes == [str(i) for i in range(10)]

    full = _invoke("train", str(out / "config.yaml"), "--device", "cpu", "--full")
    assert "NOT held out" in full and "source trial" not in full


def test_train_refuses_a_space_that_still_searches(searched: Searched) -> None:
    result = CliRunner().invoke(main, ["train", str(searched.space_file)])
    assert result.exit_code == 2
    assert "lr, optimizer, batch_size are searched, not fixed" in result.output


def test_keep_none_saves_nothing_and_export_retrains(tmp_path: Path) -> None:
    s = Searched(tmp_path, "none", keep="none", budget={"n_trials": 2, "max_epochs": 1},
                 dataset={"name": "digits", "limit": 300})
    assert not s.artifacts.exists() and all("artifacts" not in t.user_attrs for t in s.study.trials)
    text = s.cli("export", "none", "-o", str(tmp_path / "out"), "--no-onnx", "--device", "cpu")
    assert "re-trained on cpu (keep: none)" in text
    assert "differs from the recorded value by 0.00e+00" in text
    assert not (tmp_path / "out" / "model.onnx").exists()
    assert load_core(tmp_path / "out").meta["values"]["accuracy"] == s.study.best_value


def test_keep_best_keeps_one_model_and_yaml_export_is_unchanged(tmp_path: Path) -> None:
    s = Searched(tmp_path, "best1", budget={"n_trials": 3, "max_epochs": 1}, dataset={"name": "digits", "limit": 300})
    assert s.kept() == [_ranked(s.study)[0].number]
    s.cli("export", "best1", "-o", str(tmp_path / "best.yaml"))
    assert yaml.safe_load((tmp_path / "best.yaml").read_text())["source"]["trial"] == s.study.best_trial.number
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("best")) == ["best.yaml", "best1.yaml"]


def test_predict_errors_are_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["predict", str(tmp_path), str(tmp_path / "x.png")])
    assert result.exit_code == 2 and "not an exported model" in result.output


def test_folder_data_with_padding_predicts_like_training(tmp_path: Path) -> None:
    """Non-square photos, aspect pad: predict letterboxes them exactly as training did."""
    rng = np.random.default_rng(0)
    files: list[Path] = []
    for label, color in (("red", (200, 40, 40)), ("green", (40, 160, 60))):
        (tmp_path / "photos" / label).mkdir(parents=True)
        for i in range(24):
            h, w = int(rng.integers(10, 20)), int(rng.integers(20, 34))
            img = rng.integers(0, 90, (h, w, 3)).astype(np.uint8)
            img[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = color
            files.append(tmp_path / "photos" / label / f"{i:02d}.png")
            Image.fromarray(img).save(files[-1])
    doc = tiny_space("photos", dataset={"path": str(tmp_path / "photos")}, budget={"n_trials": 1, "max_epochs": 2},
                     params={"lr": 0.01, "width": 4, "aspect": "pad", "input_size": 16, "color": "hsv"})
    s = Searched(tmp_path, "photos", **{k: v for k, v in doc.items() if k != "study"})
    s.cli("export", "photos", "-o", str(tmp_path / "out"), "--no-onnx")

    data = load_dataset(s.space.dataset)
    ordered = sorted(files, key=lambda f: (f.parent.name, f.name))  # the loader's order: class, then file
    val_files = [str(ordered[i]) for i in data.val.tolist()]
    rows = json.loads(_invoke("predict", str(tmp_path / "out"), *val_files, "--json"))
    assert [r["path"] for r in rows] == val_files
    bundle = load_core(tmp_path / "out")
    expected = bundle.probabilities(prepare(s.space.dataset, 16, "pad", torch.device("cpu")).val_x)
    got = torch.tensor([[r["probabilities"][c] for c in bundle.classes] for r in rows])
    assert (got - expected).abs().max().item() < 1e-6

    other = _invoke("train", str(tmp_path / "out" / "config.yaml"), "--data", str(tmp_path / "photos"),
                    "--device", "cpu")
    assert "validation (held out)" in other and "source trial" not in other
