"""Bad input and unlucky operations, one table row each (issue 11).

Every row runs one CLI command in a fresh directory after its ``setup`` planted the condition,
then checks the contract: the exit code; a refused command says so in ONE line on stderr
starting with ``error:`` (no traceback); no secret appears in any output; the listed user files
are byte-for-byte unchanged. To cover a new command or option, add rows to ``CASES`` (a setup
function gets a :class:`World`: the row's directory, monkeypatch, and a finished study and an
exported bundle to copy in). Rows run in process with click's CliRunner (fast); set
``subprocess=True`` where the real interpreter's stderr matters.
"""

from __future__ import annotations

import contextlib

import hashlib
import json
import math
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna
import pytest
import yaml
from click.testing import CliRunner

from search.cli import main
from conftest import ROOT, tiny_space, write_space

SECRET = "s3cretPW"  # planted in storage URLs; must never be printed


# ----------------------------------------------------------------------------- shared study and bundle


@dataclass
class Finished:
    """A finished 2-trial study (SQLite + its artifact store) and an exported bundle, built once per module."""

    root: Path
    study: str = "done"

    @property
    def bundle(self) -> Path:
        return self.root / "bundle"


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Finished:
    root = tmp_path_factory.mktemp("finished")
    doc = tiny_space("done", budget={"n_trials": 2, "max_epochs": 1}, dataset={"name": "digits", "limit": 200},
                     params={"lr": 0.01, "width": 4, "depth": 1, "seed": {"choices": [1, 2]}})
    write_space(root / "space.yaml", doc)
    old = Path.cwd()
    os.chdir(root)
    try:
        _ok(CliRunner().invoke(main, ["-q", "run", "space.yaml", "--device", "cpu"]))
        _ok(CliRunner().invoke(main, ["-q", "export", "done", "-o", "bundle", "--no-onnx", "--device", "cpu"]))
    finally:
        os.chdir(old)
    return Finished(root)


def copy_db(src: Path, dst: Path) -> None:
    """Copy a SQLite database whole (its WAL included)."""
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    a.close()
    b.close()


def _ok(result: Any) -> None:
    assert result.exit_code == 0, (result.output, result.exception)


@dataclass
class World:
    """What a row's setup can use: its directory (the cwd), monkeypatch, the shared study."""

    tmp: Path
    monkeypatch: pytest.MonkeyPatch
    finished: Finished
    held: list[Any] = field(default_factory=list)  # objects to keep alive while the command runs

    def space(self, name: str = "space.yaml", **overrides: Any) -> Path:
        return write_space(self.tmp / name, tiny_space(**overrides))

    def text(self, name: str, content: str | bytes) -> Path:
        p = self.tmp / name
        p.parent.mkdir(parents=True, exist_ok=True)
        (p.write_bytes if isinstance(content, bytes) else p.write_text)(content)
        return p

    def copy_study(self) -> None:
        copy_db(self.finished.root / "studies.db", self.tmp / "studies.db")
        shutil.copytree(self.finished.root / "artifacts", self.tmp / "artifacts")

    def copy_bundle(self, name: str = "bundle") -> Path:
        return Path(shutil.copytree(self.finished.bundle, self.tmp / name))

    def edit_json(self, path: Path, change: Callable[[Any], Any]) -> None:
        doc = json.loads(path.read_text())
        doc = change(doc) or doc
        path.write_text(json.dumps(doc))


# ----------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Case:
    """One bad input or unlucky operation and what must happen."""

    id: str
    args: tuple[str, ...]  # after ``strategy-search -q``
    setup: Callable[[World], Any] | None = None
    exit_code: int = 2
    says: str = ""  # a substring of the error line (case-insensitive)
    unchanged: tuple[str, ...] = ()  # files or folders (relative to the row's directory) that must not change
    one_line: bool = True  # stderr is exactly the error line; False: only the last line is checked (warnings before)
    env: tuple[tuple[str, str], ...] = ()
    subprocess: bool = False


def _space(**overrides: Any) -> Callable[[World], Any]:
    return lambda w: w.space(**overrides)


def _raw_space(text: str | bytes) -> Callable[[World], Any]:
    return lambda w: w.text("space.yaml", text)


def _params(**params: Any) -> Callable[[World], Any]:
    def setup(w: World) -> None:
        doc = tiny_space()
        doc["params"] = {**doc["params"], **params}
        write_space(w.tmp / "space.yaml", doc)
    return setup


def _dotdot_study(w: World) -> None:
    w.text("trial-1/important.txt", "user data")
    w.space(study="..")


ALIAS_BOMB = "study: bomb\nsource:\n" + "".join(
    f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9) if i else 'x, x, x, x, x, x, x, x, x'}]\n" for i in range(9))


def _with_study(extra: Callable[[World], Any] | None = None) -> Callable[[World], Any]:
    def setup(w: World) -> None:
        w.copy_study()
        if extra is not None:
            extra(w)
    return setup


def _old_schema(w: World) -> None:
    """The study database as an older Optuna left it (its Alembic revision is not the head)."""
    with contextlib.closing(sqlite3.connect(w.tmp / "studies.db")) as db, db:
        db.execute("UPDATE alembic_version SET version_num = 'v3.0.0.a'")


def _broken_model(change: Callable[[dict], Any], file: str = "model.json") -> Callable[[World], Any]:
    def setup(w: World) -> None:
        w.copy_bundle()
        w.edit_json(w.tmp / "bundle" / file, change)
        w.text("img.png", (w.finished.root / "img.png").read_bytes() if (w.finished.root / "img.png").exists()
               else _png())
    return setup


def _png() -> bytes:
    from io import BytesIO

    from PIL import Image

    buf = BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


def _set(path: str, value: Any) -> Callable[[dict], Any]:
    def change(doc: dict) -> None:
        *parents, last = path.split(".")
        for p in parents:
            doc = doc[p]
        doc[last] = value
    return change


def _busy_port(w: World) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    w.held.append(s)
    w.text("port", str(s.getsockname()[1]))


def _bomb_beside_bundle(w: World) -> None:
    from conftest import bomb_png

    w.copy_bundle()
    bomb_png(w.tmp / "bomb.png")


def _csv_dataset(rows: str) -> Callable[[World], Any]:
    """A CSV manifest over two classes of tiny PNGs, with the given extra rows appended."""
    def setup(w: World) -> None:
        lines = ["path,label"]
        for label in ("cat", "dog"):
            for i in range(4):
                w.text(f"images/{label}{i}.png", _png())
                lines.append(f"{label}{i}.png,{label}")
        w.text("labels.csv", "\n".join(lines) + "\n" + rows)
        w.space(dataset={"csv": "labels.csv", "root": "images"})
    return setup


def _failing_training(w: World) -> None:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    w.monkeypatch.setattr("search.study.objective.train_space", boom)
    w.space(budget={"n_trials": 2, "max_epochs": 1})


CASES: list[Case] = [
    # --- space files (create validates the space and the dataset, then stores it)
    Case("study-dotdot", ("create", "space.yaml"), _dotdot_study, says="not a valid study name",
         unchanged=("trial-1",)),
    Case("study-slash", ("create", "space.yaml"), _space(study="a/b"), says="allowed: 1-128 letters"),
    Case("study-backslash", ("create", "space.yaml"), _space(study="a\\b"), says="study"),
    Case("study-leading-dot", ("create", "space.yaml"), _space(study=".hidden"), says="study"),
    Case("study-nul", ("create", "space.yaml"), _space(study="a\0b"), says="study"),
    Case("alias-bomb-in-source", ("create", "space.yaml"), _raw_space(ALIAS_BOMB), says="aliases expand"),
    Case("recursive-alias", ("create", "space.yaml"), _raw_space("study: r\nsource: &a [*a]\n"),
         says="space.yaml"),
    Case("source-wrong-type", ("create", "space.yaml"), _space(source={"trial": "x"}), says="source.trial"),
    Case("source-unknown-key", ("create", "space.yaml"), _space(source={"blob": 1}), says="source.blob"),
    Case("not-utf8", ("create", "space.yaml"), _raw_space(b"study: caf\xe9\n"), says="not UTF-8"),
    Case("when-empty-mapping", ("create", "space.yaml"),
         _params(norm={"choices": ["batchnorm", "lrn"]}, lrn_size={"int": [3, 5], "when": {"norm": {}}}),
         says="params.lrn_size.when.norm"),
    Case("when-value-not-a-choice", ("create", "space.yaml"),
         _params(norm={"choices": ["batchnorm", "lrn"]}, lrn_size={"int": [3, 5], "when": {"norm": "lnr"}}),
         says="'lnr' is not one of norm's values"),
    Case("when-refers-below", ("create", "space.yaml"),
         _params(lrn_size={"int": [3, 5], "when": {"norm": "lrn"}}, norm={"choices": ["batchnorm", "lrn"]}),
         says="listed above"),
    Case("fixed-nan", ("run", "space.yaml"), _params(lr=math.nan), says="params.lr: lr must be a finite number"),
    Case("fixed-inf", ("run", "space.yaml"), _params(lr=math.inf), says="finite"),
    Case("nan-choice", ("create", "space.yaml"), _params(dropout={"choices": [0.1, math.nan]}), says="finite"),
    Case("malformed-yaml", ("create", "space.yaml"), _raw_space("study: [x\n"), says="not valid YAML"),
    Case("python-tag", ("create", "space.yaml"), _raw_space("study: !!python/object:os.system x\n"),
         says="not valid YAML"),
    Case("unknown-top-key", ("create", "space.yaml"), _space(stdy="x"), says="unknown key"),
    Case("inverted-range", ("create", "space.yaml"), _params(lr={"float": [0.1, 0.01]}), says="is above high"),
    Case("wrong-type", ("create", "space.yaml"), _params(width="wide"), says="width must be an integer"),
    Case("mix-unknown", ("create", "space.yaml"), _params(mix={"choices": ["none", "blend"]}),
         says="mix: unknown value 'blend'; allowed: none, mixup, cutmix, mixup_cutmix"),
    Case("mix-alpha-zero", ("create", "space.yaml"), _params(mix="mixup", mix_alpha=0), says="mix_alpha must be > 0"),
    Case("imbalance-unknown", ("create", "space.yaml"), _params(imbalance="oversample"),
         says="imbalance: unknown value 'oversample'; allowed: none, weighted_loss, balanced_sampler"),
    Case("bad-policy", ("create", "space.yaml"), _params(policy={"choices": ["none", "autoaug"]}),
         says="allowed: none, trivialaugment, randaugment, autoaugment, augmix"),
    Case("missing-space", ("create", "nope.yaml"), says="no such file"),
    Case("missing-dataset", ("create", "space.yaml"), _space(dataset="no/such/folder"), says="no/such/folder"),
    Case("positive-class-unknown", ("create", "space.yaml"),
         _space(objective={"metric": "precision", "average": "binary", "positive_class": "cat"}),
         says="positive_class"),
    # --- storages: one line, exit 2, password never shown
    Case("url-unclosed-ipv6", ("best", "x", "--storage", f"postgresql+psycopg://u:{SECRET}@[::1/db"),
         says="not valid"),
    Case("url-at-in-password", ("best", "x", "--storage", f"postgresql+psycopg://u:p@{SECRET}@host/db"),
         says="%40"),
    Case("url-password-query", ("best", "x"), one_line=False, says="unreachable",
         env=(("STRATEGY_SEARCH_STORAGE", f"postgresql+psycopg://u@127.0.0.1:1/db?password={SECRET}"),
              ("STRATEGY_SEARCH_CONNECT_TIMEOUT", "1.5"))),
    Case("url-password-query-subprocess", ("best", "x", "--storage",
                                           f"postgresql+psycopg://u:{SECRET}@127.0.0.1:1/db?sslpassword={SECRET}"),
         one_line=False, env=(("STRATEGY_SEARCH_CONNECT_TIMEOUT", "1"),), subprocess=True),
    Case("url-unsupported", ("best", "x", "--storage", f"mssql://u:{SECRET}@h/db"), says="unsupported"),
    Case("url-missing-directory", ("best", "x", "--storage", "sqlite:///no/such/dir/x.db"), says="does not exist"),
    Case("unknown-study", ("best", "nope"), _with_study(), says="no study named 'nope'"),
    Case("storage-old-schema", ("best", "done"), _with_study(_old_schema), says="optuna storage upgrade",
         unchanged=("studies.db",)),
    # --- export: never overwrite or mix
    Case("export-under-a-file", ("export", "done", "-o", "afile/x"), _with_study(lambda w: w.text("afile", "mine")),
         says="is a file", unchanged=("afile",)),
    Case("export-into-user-folder", ("export", "done", "-o", "mine", "--no-onnx"),
         _with_study(lambda w: w.text("mine/config.yaml", "my own")), says="add --force", unchanged=("mine",)),
    Case("export-over-bundle", ("export", "done", "-o", "bundle", "--no-onnx"),
         _with_study(lambda w: w.copy_bundle()), says="already holds an exported bundle", unchanged=("bundle",)),
    Case("export-over-yaml", ("export", "done", "-o", "best.yaml"),
         _with_study(lambda w: w.text("best.yaml", "mine")), says="--force", unchanged=("best.yaml",)),
    Case("train-over-user-folder", ("train", "bundle/config.yaml", "-o", "mine"),
         lambda w: (w.copy_bundle(), w.text("mine/notes.txt", "mine")), says="add --force", unchanged=("mine",)),
    # --- predict: a broken or forged bundle is refused before anything is built
    Case("predict-model-json-not-json", ("predict", "bundle", "img.png"),
         lambda w: (w.copy_bundle(), w.text("bundle/model.json", "{"), w.text("img.png", _png())),
         says="cannot read JSON"),
    Case("predict-no-architecture", ("predict", "bundle", "img.png"), _broken_model(lambda d: d.__delitem__("architecture")),
         says="architecture"),
    Case("predict-bad-version", ("predict", "bundle", "img.png"), _broken_model(_set("format_version", "x")),
         says="unknown model format"),
    Case("predict-classes-not-list", ("predict", "bundle", "img.png"), _broken_model(_set("classes", 3)),
         says="classes"),
    Case("predict-width-out-of-range", ("predict", "bundle", "img.png"),
         _broken_model(_set("architecture.config.width", 10**9)), says="width must be <="),
    Case("predict-huge-architecture", ("predict", "bundle", "img.png"),
         _broken_model(lambda d: d["architecture"]["config"].update(width=1024, depth=4)),
         says="weights do not fit"),
    Case("predict-num-classes-string", ("predict", "bundle", "img.png"),
         _broken_model(_set("architecture.num_classes", "10")), says="num_classes"),
    Case("predict-norm-unknown", ("predict", "bundle", "img.png"),
         _broken_model(_set("architecture.config.norm", "magic")), says="norm"),
    Case("predict-std-short", ("predict", "bundle", "img.png"), _broken_model(_set("std", [1.0]), "preprocessing.json"),
         says="std"),
    Case("predict-std-zero", ("predict", "bundle", "img.png"),
         _broken_model(_set("std", [0.0, 0.0, 0.0]), "preprocessing.json"), says="std"),
    Case("predict-aspect-unknown", ("predict", "bundle", "img.png"),
         _broken_model(_set("aspect", "fisheye"), "preprocessing.json"), says="aspect"),
    Case("predict-preprocessing-list", ("predict", "bundle", "img.png"),
         _broken_model(lambda d: [1, 2], "preprocessing.json"), says="expected a JSON object"),
    Case("predict-missing-image", ("predict", "bundle", "nope.png"), lambda w: w.copy_bundle(),
         says="no such file"),
    # (decode_image also logs a warning before the error; image decoding is issue 11 item 4's)
    Case("predict-not-an-image", ("predict", "bundle", "x.png"), lambda w: (w.copy_bundle(), w.text("x.png", "no")),
         says="not a readable image", one_line=False),
    # --- dashboard
    Case("dashboard-port-out-of-range", ("dashboard", "--port", "99999"), says="not a TCP port"),
    Case("dashboard-port-in-use", ("dashboard", "--port", "{port}"), _busy_port, says="cannot listen"),
    # --- doctor
    Case("doctor-bad-study-name", ("doctor", "digits", "--study", "../x", "-o", "s.yaml"), says="--study"),
    Case("doctor-over-user-file", ("doctor", "digits", "-o", "mine.yaml"), lambda w: w.text("mine.yaml", "mine"),
         says="add --force", unchanged=("mine.yaml",)),
    Case("doctor-budget-not-a-duration", ("doctor", "digits", "--budget", "soon", "-o", "s.yaml"),
         says="--budget: expected a duration"),
    Case("budget-time-not-a-duration", ("create", "space.yaml"),
         _space(budget={"time": "-5m", "max_epochs": 1}), says="budget.time"),
    # --- data: images and manifests (issue 10)
    Case("predict-decompression-bomb", ("predict", "bundle", "bomb.png"), _bomb_beside_bundle,
         says="bomb.png: not a readable image (decompression bomb"),
    Case("csv-unknown-path", ("create", "space.yaml"), _csv_dataset("ghost.png,cat\n"), says="row 10"),
    Case("csv-empty-label", ("create", "space.yaml"), _csv_dataset("cat0.png,\n"), says="row 10"),
    Case("csv-duplicate-row", ("create", "space.yaml"), _csv_dataset("cat1.png,cat\n"), says="row 10"),
    Case("cache-without-data", ("cache",), says="give DATA"),
    Case("cache-missing-folder", ("cache", "no/such/folder"), says="no/such/folder"),
    # --- search rules (issue 13)
    Case("constraint-unknown-metric", ("create", "space.yaml"), _space(constraints={"speed": {"max": 1}}),
         says="constraints.speed"),
    Case("budget-target-not-a-number", ("create", "space.yaml"),
         _space(budget={"n_trials": 2, "max_epochs": 1, "target": "high"}), says="budget.target"),
    Case("warm-start-itself", ("run", "space.yaml", "--warm-start", "tiny"), _space(), says="this study itself"),
    Case("warm-storage-alone", ("run", "space.yaml", "--warm-storage", "sqlite:///x.db"), _space(),
         says="--warm-storage needs --warm-start"),
    Case("warm-start-unknown-study", ("run", "space.yaml", "--warm-start", "nope"), _space(), says="nope"),
    # --- weights fetch (issue 12): checked before anything is downloaded; never over a file without --force
    Case("weights-fetch-unknown-name", ("weights", "fetch", "no_such_model", "-o", "w"), says="not a timm model"),
    Case("weights-fetch-unknown-tag", ("weights", "fetch", "resnet18.bogus", "-o", "w"),
         says="invalid pretrained tag (bogus)"),
    Case("weights-fetch-over-existing", ("weights", "fetch", "test_resnet", "-o", "w"),
         lambda w: w.text("w/test_resnet.safetensors", "mine"), says="add --force",
         unchanged=("w/test_resnet.safetensors",)),
    Case("weights-fetch-into-a-file", ("weights", "fetch", "test_resnet", "-o", "w"), lambda w: w.text("w", "mine"),
         says="is a file", unchanged=("w",)),
    Case("weights-fetch-offline", ("weights", "fetch", "test_resnet", "-o", "w"),
         lambda w: w.monkeypatch.setenv("HF_HOME", str(w.tmp / "hf")), says="HF_HUB_OFFLINE is set",
         env=(("HF_HUB_OFFLINE", "1"),), subprocess=True),
    # --- remedies (issue 12): ema_decay, tta
    Case("ema-decay-one-minus", ("create", "space.yaml"), _params(ema_decay=0.001), says="not 1 - decay"),
    Case("ema-decay-one", ("create", "space.yaml"), _params(ema_decay=1.0), says="ema_decay must be 0 (off)"),
    Case("ema-decay-range-above", ("create", "space.yaml"), _params(ema_decay={"float": [0.9, 1.5]}),
         says="params.ema_decay.float[1]"),
    Case("tta-unknown", ("create", "space.yaml"), _params(tta="vertical"), says="allowed: none, flip"),
    Case("predict-tta-forged", ("predict", "bundle", "img.png"), _broken_model(_set("architecture.config.tta", "rot")),
         says="architecture.config.tta"),
    # --- run: every trial of its own failed
    Case("run-all-trials-failed", ("run", "space.yaml", "--device", "cpu"), _failing_training, exit_code=3,
         says="all 2 trial(s) this process ran failed"),
    # --- worker --per-gpu K|auto, compile
    Case("per-gpu-zero", ("worker", "s", "--gpus", "0", "--per-gpu", "0"), says="--per-gpu must be a number of workers",
         env=(("CUDA_VISIBLE_DEVICES", "0"),)),
    Case("per-gpu-word", ("worker", "s", "--gpus", "0", "--per-gpu", "many"), says="or 'auto', got 'many'",
         env=(("CUDA_VISIBLE_DEVICES", "0"),)),
    Case("per-gpu-auto-without-gpus", ("worker", "s", "--per-gpu", "auto", "--processes", "2"),
         says="--per-gpu needs --gpus"),
    Case("compile-not-bool", ("create", "space.yaml"), _params(compile="yes"), says="compile must be true or false"),
    Case("dataset-cache-format", ("create", "space.yaml"), _space(dataset={"name": "digits", "cache": "png"}),
         says="dataset.cache: unknown value 'png'; allowed: auto, raw, jpeg"),
    Case("dataset-cache-quality", ("create", "space.yaml"), _space(dataset={"name": "digits", "cache_quality": 101}),
         says="dataset.cache_quality"),
]


def _snapshot(paths: list[Path]) -> dict[str, str]:
    out: dict[str, str] = {}
    for p in paths:
        files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else []
        out[str(p)] = "missing" if not p.exists() else ""
        for f in files:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile(case: Case, finished: Finished, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STRATEGY_SEARCH_STORAGE", raising=False)
    monkeypatch.delenv("STRATEGY_SEARCH_CHECKPOINTS", raising=False)
    monkeypatch.delenv("STRATEGY_SEARCH_ARTIFACTS", raising=False)
    world = World(tmp_path, monkeypatch, finished)
    if case.setup is not None:
        case.setup(world)
    watched = [tmp_path / name for name in case.unchanged]
    for p in watched:
        assert p.exists(), f"setup did not create {p}"
    before = _snapshot(watched)
    args = ["-q", *(a.format(port=(tmp_path / "port").read_text()) if "{port}" in a else a for a in case.args)]
    env = dict(case.env)
    try:
        if case.subprocess:
            run = subprocess.run([sys.executable, "-m", "search.cli", *args], capture_output=True, text=True,
                                 env={**os.environ, "PYTHONPATH": str(ROOT), **env}, timeout=120)
            code, stdout, stderr = run.returncode, run.stdout, run.stderr
        else:
            for k, v in env.items():
                monkeypatch.setenv(k, v)
            result = CliRunner().invoke(main, args)
            code, stdout, stderr = result.exit_code, result.stdout, result.stderr
    finally:
        for obj in world.held:
            obj.close()
    shown = f"exit {code}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    assert code == case.exit_code, shown
    assert "Traceback" not in stderr and "Traceback" not in stdout, shown
    lines = stderr.strip().splitlines()
    assert lines, shown
    if case.one_line:
        assert len(lines) == 1, shown
    assert lines[-1].startswith("error: "), shown
    assert case.says.lower() in lines[-1].lower(), shown
    assert SECRET not in stdout + stderr, shown
    assert _snapshot(watched) == before, "a user file changed"


# ----------------------------------------------------------------------------- beyond one command


def test_the_file_store_never_writes_outside_its_directory(tmp_path: Path) -> None:
    """Defence in depth: an artifact id that is a path (ours are UUIDs) is refused."""
    from io import BytesIO

    from search.artifacts.store import open_store
    from search.core.locations import parse_location

    store = open_store(parse_location(str(tmp_path / "artifacts")), create=True)
    for bad in ("..", ".", "../x", "a/../../b", "\\..\\", ""):
        with pytest.raises(ValueError):
            store.write(bad, BytesIO(b"x"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifacts"] and not any((tmp_path / "artifacts").iterdir())


def test_export_never_ships_another_studys_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 11, item 2: two SQLite files in one folder (one artifact store), one study name, different architectures."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STRATEGY_SEARCH_ARTIFACTS", raising=False)
    for db, width, depth in (("a.db", 8, 2), ("b.db", 4, 1)):
        doc = tiny_space("same", budget={"n_trials": 1, "max_epochs": 1}, dataset={"name": "digits", "limit": 200},
                         params={"lr": 0.01, "width": width, "depth": depth})
        write_space(tmp_path / f"{db}.yaml", doc)
        _ok(CliRunner().invoke(main, ["-q", "run", f"{db}.yaml", "--storage", f"sqlite:///{db}", "--device", "cpu"]))
    studies = {db: optuna.load_study(study_name="same", storage=f"sqlite:///{db}") for db in ("a.db", "b.db")}
    kept = {db: s.trials[0].user_attrs["artifacts"]["files"] for db, s in studies.items()}
    assert not set(kept["a.db"].values()) & set(kept["b.db"].values())  # one store, no file shared
    result = CliRunner().invoke(main, ["-q", "export", "same", "--storage", "sqlite:///b.db", "-o", "out",
                                       "--no-onnx", "--device", "cpu"])
    _ok(result)
    model = json.loads((tmp_path / "out" / "model.json").read_text())
    config = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert model["architecture"]["config"]["width"] == config["params"]["width"] == 4
    assert model["architecture"]["config"]["depth"] == config["params"]["depth"] == 1
    assert "weights: kept model of trial 0" in result.stdout

    # Model files planted from the other study (its files copied over this study's in the store)
    # are recognized by their recorded identity: export re-trains instead of shipping them.
    for name in ("model.safetensors", "model.json", "preprocessing.json"):
        shutil.copyfile(tmp_path / "artifacts" / kept["a.db"][name], tmp_path / "artifacts" / kept["b.db"][name])
    result = CliRunner().invoke(main, ["-q", "export", "same", "--storage", "sqlite:///b.db", "-o", "out2",
                                       "--no-onnx", "--device", "cpu"])
    _ok(result)
    assert "is not this trial's: its study_uid" in result.stdout and "re-trained on cpu" in result.stdout
    assert json.loads((tmp_path / "out2" / "model.json").read_text())["architecture"]["config"]["width"] == 4


def test_reexport_with_force_replaces_the_whole_bundle(finished: Finished, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """--no-onnx over a bundle with model.onnx leaves no stale model.onnx; the user's own files stay."""
    monkeypatch.chdir(tmp_path)
    copy_db(finished.root / "studies.db", tmp_path / "studies.db")
    shutil.copytree(finished.root / "artifacts", tmp_path / "artifacts")
    shutil.copytree(finished.bundle, tmp_path / "bundle")
    (tmp_path / "bundle" / "model.onnx").write_text("a different model")
    listed = json.loads((tmp_path / "bundle" / "bundle.json").read_text())
    listed["files"].append("model.onnx")
    (tmp_path / "bundle" / "bundle.json").write_text(json.dumps(listed))
    _ok(CliRunner().invoke(main, ["-q", "export", "done", "-o", "bundle", "--no-onnx", "--force"]))
    assert not (tmp_path / "bundle" / "model.onnx").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bundle")]  # no temporary folder left

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    result = CliRunner().invoke(main, ["-q", "export", "done", "-o", "mine", "--no-onnx", "--force"])
    _ok(result)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"
    assert "notes.txt" not in result.stdout  # only the bundle's own files are listed
    assert (tmp_path / "mine" / "model.safetensors").is_file()


def test_an_infinite_objective_fails_the_trial_with_its_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    from search.space.parse import parse_space
    from search.study.objective import Objective
    from search.study.runner import run_trials
    from search.study.create import create_study

    spec = parse_space(tiny_space("inf", budget={"n_trials": 2, "max_epochs": 1}))
    values = iter([math.inf, -math.inf])
    monkeypatch.setattr(Objective, "__call__", lambda self, trial: next(values))
    monkeypatch.setattr(Objective, "check_ready", lambda self: None)
    study = create_study(spec, optuna.storages.InMemoryStorage())
    summary = run_trials(study, spec, device="cpu")
    assert summary.counts["FAIL"] == 2
    for t in study.trials:
        assert t.state == optuna.trial.TrialState.FAIL
        assert t.user_attrs["fail_reason"].startswith("non-finite objective")


def test_numeric_class_names_match_by_name_first() -> None:
    from search.space.parse import ObjectiveSpec
    from search.train.metrics import positive_index

    classes = ["1", "2", "3"]
    for given, expected in ((1, 0), (3, 2), ("2", 1), (0, 0)):
        spec = ObjectiveSpec("precision", "binary", given)
        assert positive_index(spec, classes) == expected, given


def test_masking_covers_userinfo_query_and_free_text() -> None:
    from search.core.redact import mask_url, scrub

    assert mask_url(f"postgresql+psycopg://u:p@{SECRET}@host/db") == "postgresql+psycopg://u:***@host/db"
    assert mask_url(f"postgresql://u@h:1/db?sslmode=require&password={SECRET}") == \
        "postgresql://u@h:1/db?sslmode=require&password=***"
    assert mask_url("sqlite:///a/b@c.db") == "sqlite:///a/b@c.db"
    assert SECRET not in scrub(f"connection failed for password {SECRET} (url postgresql://x:{SECRET}@h/d)")


def test_dashboard_is_read_only_unless_asked(tmp_path: Path) -> None:
    import threading
    import urllib.error
    import urllib.request

    from search.tools.dashboard import make_server

    url = f"sqlite:///{tmp_path / 'd.db'}"
    optuna.create_study(study_name="keep-me", storage=url)
    server = make_server(url, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        with urllib.request.urlopen(f"{base}/api/studies", timeout=10) as r:
            assert r.status == 200 and "keep-me" in r.read().decode()
        request = urllib.request.Request(f"{base}/api/studies/1", method="DELETE")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 405
    finally:
        server.shutdown()
        server.server_close()
    assert optuna.get_all_study_names(url) == ["keep-me"]


def test_a_forged_architecture_is_refused_before_real_memory_is_allocated(
        finished: Finished, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 11 item 9: width 1024 / depth 4 in model.json allocated 1.4 GB before being rejected."""
    import torch

    import search.models.factory as factory
    from search.artifacts.bundle import load_core
    from search.core.errors import UserError

    bundle = Path(shutil.copytree(finished.bundle, tmp_path / "bundle"))
    doc = json.loads((bundle / "model.json").read_text())
    doc["architecture"]["config"].update(width=1024, depth=4)
    (bundle / "model.json").write_text(json.dumps(doc))
    built_on: list[str] = []
    real = factory.create_model

    def spy(config: Any, *args: Any, **kwargs: Any) -> Any:
        built_on.append(str(torch.get_default_device()))
        return real(config, *args, **kwargs)

    monkeypatch.setattr(factory, "create_model", spy)
    with pytest.raises(UserError, match="weights do not fit"):
        load_core(bundle)
    assert built_on == ["meta"]  # only the shape check's skeleton, which holds no memory


# ----------------------------------------------------------------------------- issue 24 (firstweek): predict's exit rule
# (Rows of their own test function: CASES above is read when test_hostile is parametrized.)


def _images(*names: str, good: int = 1) -> Callable[[World], Any]:
    """The bundle, ``good`` readable images and the unreadable files ``names`` in ``imgs/``."""
    def setup(w: World) -> None:
        from PIL import Image

        w.copy_bundle()
        for i in range(good):
            (w.tmp / "imgs").mkdir(exist_ok=True)
            Image.new("RGB", (8, 8), (i * 40, 90, 200)).save(w.tmp / "imgs" / f"ok{i}.png")
        for name in names:
            w.text(f"imgs/{name}", b"not an image")
    return setup


FIRSTWEEK_CASES = [
    Case("predict-folder-nothing-readable", ("predict", "bundle", "imgs"), _images("a.png", "b.jpg", good=0),
         says="none of the 2 images could be read (first:"),
    Case("predict-strict-stops-at-an-unreadable-one", ("predict", "bundle", "imgs", "--strict"),
         _images("bad.png", good=2), says="bad.png: not a readable image"),
]


@pytest.mark.parametrize("case", FIRSTWEEK_CASES, ids=[c.id for c in FIRSTWEEK_CASES])
def test_hostile_firstweek(case: Case, finished: Finished, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    test_hostile(case, finished, tmp_path, monkeypatch)


# ----------------------------------------------------------------------------- artifact store (issue 27, items 1-2)
# Rows for --artifacts / $STRATEGY_SEARCH_ARTIFACTS / the space's artifacts: key. S3 rows talk to a real
# S3 protocol server (moto's, tests/s3server.py) started by the row's setup and stopped after it.


def _aws(w: World, endpoint: str, **overrides: str | None) -> None:
    """This row's AWS environment: ``endpoint``, the planted SECRET as the secret key, nothing of ~/.aws."""
    from s3server import client_env

    for name in [k for k in os.environ if k.startswith("AWS_")]:
        w.monkeypatch.delenv(name)
    for name, value in {**client_env(endpoint), "AWS_SECRET_ACCESS_KEY": SECRET, **overrides}.items():
        if value is None:
            w.monkeypatch.delenv(name, raising=False)
        else:
            w.monkeypatch.setenv(name, value)


def _s3(extra: Callable[[World], Any] | None = None, **overrides: str | None) -> Callable[[World], Any]:
    """Setup: a moto S3 server (no bucket in it), the finished study, and ``extra``."""
    def setup(w: World) -> None:
        from s3server import S3Server

        server = S3Server.start()
        w.held.append(server)
        _aws(w, server.endpoint, **overrides)
        w.copy_study()
        if extra is not None:
            extra(w)
    return setup


def _unreachable_s3(w: World) -> None:
    _aws(w, "http://127.0.0.1:1")
    w.copy_study()


ARTIFACT_CASES: list[Case] = [
    Case("artifacts-bad-scheme", ("run", "space.yaml", "--artifacts", "ftp://host/x"), _space(),
         says="--artifacts: ftp:// is not a supported scheme"),
    Case("artifacts-credentials-in-url", ("run", "space.yaml", "--artifacts", f"s3://AKIAX:{SECRET}@models/x"),
         _space(), says="credentials do not belong in the artifacts url"),
    Case("artifacts-bad-bucket-name", ("export", "done", "-o", "out", "--artifacts", "s3://Bad_Bucket/x"),
         _with_study(), says="'Bad_Bucket' is not a valid bucket name"),
    Case("artifacts-bad-env", ("export", "done", "-o", "out"), _with_study(), says="not a valid bucket name",
         env=(("STRATEGY_SEARCH_ARTIFACTS", "s3://"),)),
    Case("artifacts-space-key-bad", ("create", "space.yaml"), _space(artifacts="http://host/x"),
         says="space.yaml: artifacts: http:// is not a supported scheme"),
    Case("artifacts-space-key-credentials", ("create", "space.yaml"), _space(artifacts=f"s3://k:{SECRET}@models"),
         says="space.yaml: artifacts: credentials do not belong"),
    Case("artifacts-store-is-a-file", ("export", "done", "-o", "out", "--artifacts", "afile"),
         _with_study(lambda w: w.text("afile", "mine")), says="is a file, not a directory", unchanged=("afile",)),
    Case("artifacts-workers-bad-url", ("worker", "done", "--processes", "2", "--artifacts", "ftp://x/y"),
         _with_study(), says="ftp:// is not a supported scheme"),
    Case("artifacts-missing-bucket-run", ("run", "space.yaml", "--artifacts", "s3://no-such-bucket/p"),
         _s3(lambda w: w.space()), says="bucket 'no-such-bucket' does not exist"),
    Case("artifacts-missing-bucket-export", ("export", "done", "-o", "out", "--artifacts", "s3://no-such-bucket/p"),
         _s3(), says="artifacts s3://no-such-bucket/p: bucket 'no-such-bucket' does not exist"),
    Case("artifacts-missing-bucket-dashboard", ("dashboard", "--port", "0", "--artifacts", "s3://no-such-bucket"),
         _s3(), says="bucket 'no-such-bucket' does not exist"),
    Case("artifacts-no-credentials", ("report", "done", "--artifacts", "s3://models/p"),
         _s3(AWS_ACCESS_KEY_ID=None, AWS_SECRET_ACCESS_KEY=None), says="no AWS credentials found"),
    Case("artifacts-endpoint-unreachable", ("export", "done", "-o", "out", "--artifacts", "s3://models/p"),
         _unreachable_s3, says="cannot reach the S3 endpoint"),
]


@pytest.mark.parametrize("case", ARTIFACT_CASES, ids=[c.id for c in ARTIFACT_CASES])
def test_hostile_artifacts(case: Case, finished: Finished, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    test_hostile(case, finished, tmp_path, monkeypatch)
