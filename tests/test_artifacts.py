"""Trial files in Optuna's artifact store (a directory here; S3 in test_artifacts_s3.py): what a kept
trial uploads, the keep policy removing what falls out, and export, report and dashboard reading back."""

from __future__ import annotations

import contextlib
import io
import json
import sqlite3
import threading
import urllib.request
from pathlib import Path
from typing import Any

import optuna
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from conftest import tiny_space, write_space
from search import records
from search.artifacts.store import FileStore, open_store
from search.artifacts.trial_files import CORE_FILES, TrialFiles, model_identity, recorded_source
from search.cli import main
from search.core.errors import UserError
from search.core.locations import parse_location
from search.storage import internals

ALL_FILES = {"model.safetensors", "model.json", "preprocessing.json", "learning_curve.png", "confusion_matrix.png",
             "metrics.json"}


def _ok(*args: str) -> str:
    result = CliRunner().invoke(main, ["-q", *args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


# ----------------------------------------------------------------------------- URLs


@pytest.mark.parametrize("text, url", [
    ("file:///data/store", "file:///data/store"),
    ("file://localhost/data/./store/", "file:///data/store"),
    ("/data/store", "file:///data/store"),
    ("s3://models", "s3://models"),
    ("s3://models/team/a/", "s3://models/team/a"),
    ("S3://my.bucket-1/p", "s3://my.bucket-1/p"),
    ("gs://bucket-x/runs", "gs://bucket-x/runs"),
])
def test_artifacts_urls_are_parsed_once_into_a_location(text: str, url: str) -> None:
    assert parse_location(text).url == url


@pytest.mark.parametrize("text, says", [
    ("ftp://host/x", "ftp:// is not a supported scheme"),
    ("s3:models", "s3: is not a supported scheme"),
    ("s3://KEYID:sekrit@models/p", "credentials do not belong in the artifacts URL (s3://***@models)"),
    ("s3://Models_Bucket", "not a valid bucket name"),
    ("s3://ab", "not a valid bucket name"),
    ("s3://models/a/../b", "'.' or '..' part"),
    ("s3://models?endpoint=http://x", "no query or fragment"),
    ("file://fileserver/share", "not on host 'fileserver'"),
    ("", "expected a URL"),
])
def test_a_bad_artifacts_url_is_one_line_that_never_repeats_a_secret(text: str, says: str) -> None:
    with pytest.raises(UserError) as err:
        parse_location(text)
    assert says in str(err.value) and "sekrit" not in str(err.value) and "\n" not in str(err.value)


def test_a_relative_directory_is_relative_to_the_space_file(tmp_path: Path) -> None:
    from search.space.parse import parse_space

    space = parse_space(tiny_space(artifacts="shared/store"), source="s.yaml", base_dir=tmp_path)
    assert space.artifacts == (tmp_path / "shared" / "store").as_uri() == space.raw["artifacts"]
    with pytest.raises(UserError, match=r"s.yaml: artifacts: .*credentials do not belong"):
        parse_space(tiny_space(artifacts="s3://k:sekrit@models"), source="s.yaml")


# ----------------------------------------------------------------------------- the file store


def test_a_killed_write_leaves_no_file_under_the_artifact_id(tmp_path: Path) -> None:
    store = open_store(parse_location(str(tmp_path / "store")), create=True)
    assert isinstance(store, FileStore)

    class Dies(io.RawIOBase):
        """A source that delivers some bytes, then fails (the uploading process dying mid-copy)."""

        def __init__(self) -> None:
            self.sent = 0

        def readable(self) -> bool:
            return True

        def readinto(self, buf: Any) -> int:
            if self.sent >= 3:
                raise OSError("killed")
            buf[:1] = b"x"
            self.sent += 1
            return 1

    with pytest.raises(OSError, match="killed"):
        store.write("abc-123", Dies())
    assert list((tmp_path / "store").iterdir()) == []  # neither the id nor a temporary file
    store.write("abc-123", io.BytesIO(b"whole"))
    assert store.open_reader("abc-123").read() == b"whole"


def test_an_unusable_directory_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("mine")
    with pytest.raises(UserError, match="is a file, not a directory"):
        open_store(parse_location(str(tmp_path / "afile")))
    # A reader never creates the directory; a worker does.
    assert isinstance(open_store(parse_location(str(tmp_path / "nothing"))), FileStore)
    assert not (tmp_path / "nothing").exists()
    open_store(parse_location(str(tmp_path / "nothing")), create=True)
    assert (tmp_path / "nothing").is_dir()


def test_a_gs_store_without_its_client_library_says_what_to_install() -> None:
    try:
        import google.cloud.storage  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("google-cloud-storage is installed: opening a gs:// store would reach Google")
    with pytest.raises(UserError, match=r"^artifacts gs://bucket-x/p: google-cloud-storage is not installed; pip "):
        open_store(parse_location("gs://bucket-x/p"))


# ----------------------------------------------------------------------------- a study keeping its best trial


class Kept:
    """A 3-trial study with keep: best whose second trial beats the first (their lr is queued:
    trial 0 learns almost nothing, trial 1 learns), so trial 0's files are uploaded, then removed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.storage = f"sqlite:///{root}/studies.db"
        doc = tiny_space("kept", budget={"n_trials": 3, "max_epochs": 3}, dataset={"name": "digits", "limit": 300},
                         params={"lr": {"float": [0.00001, 0.05], "log": True}, "width": 8, "depth": 2,
                                 "batch_size": 32},
                         enqueue=[{"lr": 0.00001}, {"lr": 0.02}, {"lr": 0.00002}])
        write_space(root / "kept.yaml", doc)
        _ok("run", str(root / "kept.yaml"), "--storage", self.storage, "--device", "cpu")
        self.store_dir = root / "artifacts"  # the default: beside the SQLite file

    def study(self) -> optuna.Study:
        return optuna.load_study(study_name="kept", storage=self.storage)

    def files(self) -> TrialFiles:
        study = self.study()
        return TrialFiles(open_store(parse_location(str(self.store_dir))), internals.storage_of(study),
                          internals.study_id(study))


@pytest.fixture(scope="module")
def kept(tmp_path_factory: pytest.TempPathFactory) -> Kept:
    return Kept(tmp_path_factory.mktemp("kept"))


def test_the_kept_trial_uploads_its_files_and_displaced_ones_are_removed(kept: Kept) -> None:
    study = kept.study()
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    values = [t.value for t in trials]
    assert values[1] > values[0] and values[1] > values[2], values  # the queued lrs did what they should
    files = kept.files()
    # Trial 0 was kept until trial 1 finished; trial 1's worker removed its files and recorded that.
    first = records.artifacts_of(trials[0])[1]
    assert set(first) == ALL_FILES and files.files(trials[0]) == {}
    storage = internals.storage_of(study)
    assert records.removed_artifacts(storage.get_study_system_attrs(internals.study_id(study))) == \
        {i: 0 for i in first.values()}
    assert set(files.files(trials[1])) == ALL_FILES and files.has_model(trials[1])
    assert records.artifacts_of(trials[2]) == (None, {})  # never kept: nothing uploaded
    # The directory holds exactly the best trial's files.
    assert sorted(p.name for p in kept.store_dir.iterdir()) == sorted(files.files(trials[1]).values())
    # Optuna lists them as the trial's artifacts, with the types the dashboard previews.
    metas = {m.filename: m for m in optuna.artifacts.get_all_artifact_meta(trials[1], storage=internals.storage_of(study))}
    assert set(metas) == ALL_FILES and metas["learning_curve.png"].mimetype == "image/png"


def test_the_kept_model_is_the_trials_own(kept: Kept, tmp_path: Path) -> None:
    study = kept.study()
    best = study.best_trial
    kept.files().download(best, CORE_FILES, tmp_path)
    assert recorded_source(tmp_path) == model_identity(study, best.number, best.user_attrs["config"])
    metrics = json.loads(kept.files().read(best, "metrics.json"))
    assert metrics["validation"]["confusion"] == best.user_attrs["val"]["confusion"]
    assert set(metrics["validation"]["per_class"]) == {str(i) for i in range(10)}
    assert kept.files().read(best, "confusion_matrix.png").startswith(b"\x89PNG")


def test_export_report_and_dashboard_read_the_kept_files(kept: Kept, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    best = kept.study().best_trial
    text = _ok("export", "kept", "--storage", kept.storage, "-o", "bundle", "--no-onnx")
    assert f"weights: kept model of trial {best.number} in {kept.store_dir.as_uri()}" in text

    _ok("report", "kept", "--storage", kept.storage, "-o", "r.html")
    page = Path("r.html").read_text()
    assert 'id="kept-files"' in page and 'id="per-class-1"' in page and "kept-files-0" not in page
    for name in ("learning_curve.png", "confusion_matrix.png"):
        assert Path(f"r_png/kept-files-trial1-{name}").read_bytes() == kept.files().read(best, name)

    from search.tools.dashboard import make_server

    server = make_server(kept.storage, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        study_id = internals.study_id(kept.study())
        with urllib.request.urlopen(f"{base}/api/studies/{study_id}", timeout=30) as resp:
            shown = {t["number"]: {a["filename"]: a["artifact_id"] for a in t["artifacts"]}
                     for t in json.load(resp)["trials"]}
        # The removed files of trial 0 are not listed (their metas stay on the finished trial).
        assert shown == {0: {}, 1: kept.files().files(best), 2: {}}
        picture = shown[1]["learning_curve.png"]
        with urllib.request.urlopen(f"{base}/artifacts/{study_id}/{internals.trial_id(best)}/{picture}",
                                    timeout=30) as resp:
            assert resp.headers["Content-Type"] == "image/png"
            assert resp.read() == kept.files().read(best, "learning_curve.png")
    finally:
        server.shutdown()
        server.server_close()


def test_confirm_warns_when_its_winner_keeps_no_model(kept: Kept) -> None:
    from search.space.parse import parse_space
    from search.tools.confirm import winner_model_note

    study = kept.study()
    space = parse_space(records.stored_space(study))
    from types import SimpleNamespace

    rows = [{"trial": n} for n in range(3)]  # (only their count is read)
    # A confirmation record's winner and rows (records.ConfirmationRecord reads the same two).
    assert winner_model_note(study, space, SimpleNamespace(winner=1, rows=rows)) is None  # the best keeps its model
    note = winner_model_note(study, space, SimpleNamespace(winner=0, rows=rows))  # its files were removed
    assert note == ("trial 0 keeps no model (keep: best kept other trials), so export re-trains it; "
                    "keep: top_k with keep_top_k: 3 would have kept every candidate's")


def test_one_dashboard_serves_studies_whose_files_are_in_different_stores(kept: Kept, tmp_path: Path) -> None:
    from search.tools.dashboard import make_server

    # A second study in the same database, its files in another store (given on the command line).
    doc = tiny_space("other", budget={"n_trials": 1, "max_epochs": 1}, dataset={"name": "digits", "limit": 200},
                     params={"lr": 0.01, "width": 4, "depth": 1})
    write_space(tmp_path / "other.yaml", doc)
    _ok("run", str(tmp_path / "other.yaml"), "--storage", kept.storage, "--device", "cpu",
        "--artifacts", str(tmp_path / "elsewhere"))
    server = make_server(kept.storage, "127.0.0.1", 0)  # no --artifacts: each trial's own store
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        for name, folder in (("kept", kept.store_dir), ("other", tmp_path / "elsewhere")):
            study = optuna.load_study(study_name=name, storage=kept.storage)
            best = study.best_trial
            picture = best.user_attrs[records.ARTIFACTS]["files"]["confusion_matrix.png"]
            with urllib.request.urlopen(f"{base}/artifacts/{internals.study_id(study)}/{internals.trial_id(best)}/"
                                        f"{picture}", timeout=30) as resp:
                assert resp.read() == (folder / picture).read_bytes()
    finally:
        server.shutdown()
        server.server_close()


def test_export_and_report_follow_the_store_the_worker_recorded(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker was given --artifacts (not in the space): another machine needs no option to find it."""
    doc = tiny_space("told", budget={"n_trials": 1, "max_epochs": 1}, dataset={"name": "digits", "limit": 200},
                     params={"lr": 0.01, "width": 4, "depth": 1})
    write_space(tmp_path / "told.yaml", doc)
    storage = f"sqlite:///{tmp_path}/db/s.db"
    (tmp_path / "db").mkdir()
    store = tmp_path / "nfs" / "store"
    _ok("run", str(tmp_path / "told.yaml"), "--storage", storage, "--device", "cpu", "--artifacts", str(store))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    text = _ok("export", "told", "--storage", storage, "-o", "bundle", "--no-onnx")
    assert f"weights: kept model of trial 0 in {store.as_uri()}" in text
    _ok("report", "told", "--storage", storage, "-o", "r.html", "--no-png")
    assert f"read from {store.as_uri()}" in Path("r.html").read_text()


def test_export_says_where_the_files_are_when_the_store_given_is_another(kept: Kept, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    text = _ok("export", "kept", "--storage", kept.storage, "-o", "bundle", "--no-onnx", "--device", "cpu",
               "--artifacts", str(tmp_path / "elsewhere"))
    assert f"pass --artifacts {kept.store_dir.as_uri()}" in text and "re-trained on cpu" in text
    assert "differs from the recorded value by 0.00e+00" in text


def test_a_study_kept_before_the_artifact_store_still_exports_its_checkpoint(kept: Kept, tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The read path for studies whose models an older version kept in checkpoints/<study>.<uid>/trial-N."""
    monkeypatch.chdir(tmp_path)
    with contextlib.closing(sqlite3.connect(kept.root / "studies.db")) as a, \
            contextlib.closing(sqlite3.connect(tmp_path / "studies.db")) as b:
        a.backup(b)  # the database whole, its WAL included
    study = optuna.load_study(study_name="kept", storage="sqlite:///studies.db")
    best = study.best_trial
    folder = Path("checkpoints") / f"kept.{records.study_uid(study)[:16]}" / f"trial-{best.number}"
    kept.files().download(best, CORE_FILES, folder)
    # As an older version left the database: a "checkpoint" attr, no "artifacts" one.
    with contextlib.closing(sqlite3.connect("studies.db")) as db, db:
        tid = internals.trial_id(best)
        db.execute("DELETE FROM trial_user_attributes WHERE trial_id = ? AND key = ?", (tid, records.ARTIFACTS))
        db.execute("INSERT INTO trial_user_attributes (trial_id, key, value_json) VALUES (?, ?, ?)",
                   (tid, records.CHECKPOINT, json.dumps(str(folder.relative_to("checkpoints")))))
    text = _ok("export", "kept", "-o", "bundle", "--no-onnx")
    assert f"weights: checkpoint {folder.resolve()} (kept before the artifact store)" in text
    assert (Path("bundle") / "model.safetensors").read_bytes() == (folder / "model.safetensors").read_bytes()


# ----------------------------------------------------------------------------- unlucky uploads


class Broken:
    """A store whose every write fails (a full disk, a bucket that went away)."""

    location = parse_location("/nowhere")

    def write(self, artifact_id: str, body: Any) -> None:
        raise OSError(28, "No space left on device")

    def open_reader(self, artifact_id: str) -> Any:
        raise FileNotFoundError(artifact_id)

    def remove(self, artifact_id: str) -> None:
        raise FileNotFoundError(artifact_id)


def test_a_failed_upload_is_recorded_and_the_trial_still_counts() -> None:
    from search.space.parse import parse_space
    from search.study.create import create_study
    from search.study.runner import run_trials

    spec = parse_space(tiny_space("broken", budget={"n_trials": 2, "max_epochs": 1},
                                  dataset={"name": "digits", "limit": 200}, params={"lr": 0.01, "width": 4}))
    study = create_study(spec, optuna.storages.InMemoryStorage())
    summary = run_trials(study, spec, device="cpu", artifacts=Broken())
    assert summary.counts["COMPLETE"] == 2
    first = study.trials[0]  # kept (the best so far), so it tried
    assert first.user_attrs[records.ARTIFACT_ERROR] == "OSError: [Errno 28] No space left on device"
    assert records.artifacts_of(first) == (None, {})


def test_a_warm_start_never_copies_the_source_studys_files() -> None:
    trial = optuna.trial.create_trial(value=1.0, user_attrs={
        records.ARTIFACTS: {"store": "s3://x", "files": {"model.json": "id"}}, records.ARTIFACT_ERROR: "x",
        records.CONFIG: {"lr": 0.1}})
    assert set(records.warm_start_attrs(trial, "src")) == {records.CONFIG, records.WARM_START}
