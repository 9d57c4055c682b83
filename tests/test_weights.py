"""Pretrained weights: a local file first, else timm (Hugging Face cache); both missing is a FAIL trial
that says both ways out; ``weights fetch`` writes NAME.safetensors. Nothing here downloads: the hub
is offline (HF_HUB_OFFLINE) with an empty or hand-filled cache in a temp folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import huggingface_hub.constants
import optuna
import pytest
import timm
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from conftest import ROOT, tiny_space, write_space
from search.cli import main
from search.core.errors import UserError, WeightsError
from search.models.backbones import create_backbone
from search.tools.weights import fetch_weights
from test_backbones import NAME, _save_checkpoint

BOTH_WAYS_OUT = ("HF_HUB_OFFLINE is set and the Hugging Face cache has no copy",
                 f"put {NAME}.safetensors in that folder", f"strategy-search weights fetch {NAME} -o",
                 "go online with HF_HUB_OFFLINE unset")


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An offline Hugging Face hub with an empty cache, and an empty HOME (no default weights folder)."""
    cache = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub read both when first imported; these are what it consults on each call.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return cache


def _put_in_hub_cache(cache: Path, weights: Path) -> None:
    """Lay ``weights`` out as a download of NAME's hub repo would be in the cache."""
    repo = timm.models.get_pretrained_cfg(NAME).hf_hub_id
    folder = cache / f"models--{repo.replace('/', '--')}"
    revision = "0" * 40
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(revision)
    (folder / "snapshots" / revision).mkdir(parents=True)
    shutil.copy(weights, folder / "snapshots" / revision / "model.safetensors")


def _body_equal(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> bool:
    loaded = model.state_dict()
    body = [k for k in state if not k.startswith("fc.")]
    return bool(body) and all(torch.equal(loaded[k], state[k]) for k in body)


def _run(tmp_path: Path, **space: object) -> tuple[object, optuna.trial.FrozenTrial]:
    doc = tiny_space(budget={"n_trials": 1, "max_epochs": 1}, dataset={"name": "digits", "limit": 200},
                     params={"backbone": NAME, "pretrained": True, "input_size": 32, "lr": 0.01,
                             "batch_size": 64}, **space)
    write_space(tmp_path / "space.yaml", doc)
    db = f"sqlite:///{tmp_path / 'studies.db'}"
    result = CliRunner().invoke(main, ["-q", "run", str(tmp_path / "space.yaml"), "--device", "cpu",
                                       "--storage", db])
    return result, optuna.load_study(study_name="tiny", storage=db).trials[0]


def test_a_local_file_wins_and_a_study_trains_from_it(hub: Path, tmp_path: Path) -> None:
    # The hub cache holds other weights: the local folder must be read first.
    cached = _save_checkpoint(tmp_path / "src", ".safetensors")
    _put_in_hub_cache(hub, tmp_path / "src" / f"{NAME}.safetensors")
    state = {k: v + 1 if v.is_floating_point() else v for k, v in cached.items()}
    weights = tmp_path / "weights"
    weights.mkdir()
    save_file(state, str(weights / f"{NAME}.safetensors"))
    model = create_backbone(NAME, num_classes=5, in_chans=3, pretrained=True, weights_dir=weights)
    assert _body_equal(model, state)
    result, trial = _run(tmp_path, weights_dir=str(weights))
    assert result.exit_code == 0, result.output
    assert trial.state == optuna.trial.TrialState.COMPLETE


def test_the_default_folder_is_read_when_no_weights_dir_is_given(hub: Path, tmp_path: Path) -> None:
    default = tmp_path / "home" / ".cache" / "strategy-search" / "weights"
    default.parent.mkdir(parents=True)
    state = _save_checkpoint(default, ".safetensors")
    model = create_backbone(NAME, num_classes=5, in_chans=3, pretrained=True, weights_dir=None)
    assert _body_equal(model, state)


def test_a_training_checkpoint_with_wrapper_prefixes_loads(hub: Path, tmp_path: Path) -> None:
    state = _save_checkpoint(tmp_path / "src", ".safetensors")
    (tmp_path / "weights").mkdir()
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}},
               tmp_path / "weights" / f"{NAME}.pth")
    model = create_backbone(NAME, num_classes=5, in_chans=3, pretrained=True, weights_dir=tmp_path / "weights")
    assert _body_equal(model, state)


class _Planted:
    """Unpickling this opens (creates) a file: what a hostile checkpoint could do instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return open, (str(self.marker), "w")


def test_a_checkpoint_that_runs_code_is_refused_unopened(hub: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    (tmp_path / "weights").mkdir()
    torch.save({"conv1.0.weight": torch.zeros(1), "x": _Planted(marker)}, tmp_path / "weights" / f"{NAME}.pth")
    with pytest.raises(WeightsError, match=f"cannot read weights .*{NAME}.pth") as err:
        create_backbone(NAME, num_classes=5, in_chans=3, pretrained=True, weights_dir=tmp_path / "weights")
    assert "\n" not in str(err.value)
    assert not marker.exists()


def test_without_a_local_file_timm_loads_from_the_hugging_face_cache(hub: Path, tmp_path: Path) -> None:
    state = _save_checkpoint(tmp_path / "src", ".safetensors")
    _put_in_hub_cache(hub, tmp_path / "src" / f"{NAME}.safetensors")
    model = create_backbone(NAME, num_classes=5, in_chans=3, pretrained=True, weights_dir=tmp_path / "empty")
    assert _body_equal(model, state)
    assert model.get_classifier().out_features == 5


def test_neither_is_one_line_naming_both_ways_out(hub: Path, tmp_path: Path) -> None:
    with pytest.raises(WeightsError) as err:
        create_backbone(NAME, num_classes=5, in_chans=3, pretrained=True, weights_dir=None)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"no pretrained weights for backbone '{NAME}'")
    assert str(tmp_path / "home" / ".cache" / "strategy-search" / "weights") in message
    for phrase in BOTH_WAYS_OUT:
        assert phrase.lower() in message.lower(), message


def test_neither_fails_the_trial_with_that_reason_and_no_traceback(hub: Path, tmp_path: Path) -> None:
    result, trial = _run(tmp_path, weights_dir=str(tmp_path / "nowhere"))
    assert result.exit_code == 3, result.output  # every trial failed; the worker went on to the end
    assert "Traceback" not in result.output
    assert trial.state == optuna.trial.TrialState.FAIL
    reason = trial.user_attrs["fail_reason"]
    assert reason.startswith(f"WeightsError: no pretrained weights for backbone '{NAME}': no file in "
                             f"{tmp_path / 'nowhere'} (does not exist), and timm cannot load them"), reason
    for phrase in BOTH_WAYS_OUT:
        assert phrase.lower() in reason.lower(), reason


def test_fetch_writes_safetensors_and_never_overwrites_without_force(hub: Path, tmp_path: Path) -> None:
    state = _save_checkpoint(tmp_path / "src", ".safetensors")
    _put_in_hub_cache(hub, tmp_path / "src" / f"{NAME}.safetensors")  # timm's real loading, offline
    out = tmp_path / "out"
    assert fetch_weights([NAME], out) == [out / f"{NAME}.safetensors"]
    saved = load_file(str(out / f"{NAME}.safetensors"))
    assert saved.keys() == state.keys() and all(torch.equal(saved[k], state[k]) for k in state)
    assert sorted(p.name for p in out.iterdir()) == [f"{NAME}.safetensors"]  # no partial file left
    # What it wrote is what a trial on an offline machine reads.
    model = create_backbone(NAME, num_classes=3, in_chans=3, pretrained=True, weights_dir=out)
    assert _body_equal(model, state)

    (out / f"{NAME}.safetensors").write_bytes(b"mine")
    with pytest.raises(UserError, match="already exists; add --force"):
        fetch_weights([NAME], out)
    assert (out / f"{NAME}.safetensors").read_bytes() == b"mine"
    result = CliRunner().invoke(main, ["-q", "weights", "fetch", NAME, "-o", str(out), "--force"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"wrote {out / f'{NAME}.safetensors'}"
    assert torch.equal(load_file(str(out / f"{NAME}.safetensors"))["fc.weight"], state["fc.weight"])


def test_fetch_offline_says_so_and_writes_nothing(hub: Path, tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="HF_HUB_OFFLINE is set") as err:
        fetch_weights([NAME], tmp_path / "out")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_create_the_shipped_transfer_space_on_a_new_machine(hub: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "home").mkdir()
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["create", str(ROOT / "spaces" / "transfer.yaml")])
    assert result.exit_code == 0, result.output
    assert "study 'transfer' ready" in result.stdout
    assert "weights" not in result.stderr  # no warning: nothing about weights is wrong on a new machine
