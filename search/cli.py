"""The ``strategy-search`` command: parses arguments and calls the library."""

from __future__ import annotations

import functools
import json
import logging
import sys
from typing import Any, Callable

import click

from search import __version__
from search.errors import UserError

log = logging.getLogger("search")

storage_option = click.option(
    "--storage", envvar="STRATEGY_SEARCH_STORAGE", default=None, metavar="URL",
    help="Study storage (default sqlite:///studies.db; env STRATEGY_SEARCH_STORAGE).",
)
device_option = click.option("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available).")
weights_option = click.option("--weights-dir", default=None, type=click.Path(file_okay=True),
                              help="Local directory with pretrained backbone weights.")


def _user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn library errors into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)

    return wrapper


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", force=True)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="strategy-search")
@click.option("-v", "--verbose", count=True, help="Debug logging.")
@click.option("-q", "--quiet", is_flag=True, help="Warnings and errors only.")
def main(verbose: int, quiet: bool) -> None:
    """Search augmentation, input, architecture and training strategies for an image classifier."""
    _setup_logging(verbose, quiet)


@main.command()
@click.argument("space", type=click.Path(dir_okay=False))
@storage_option
@click.option("--n-trials", type=click.IntRange(min=1), default=None, help="Study's total trial budget.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None, help="Stop after S seconds.")
@device_option
@weights_option
@_user_errors
def run(space: str, storage: str | None, n_trials: int | None, timeout: float | None, device: str | None,
        weights_dir: str | None) -> None:
    """Create (or resume) the study of SPACE and run trials in this process."""
    from search.space import load_space
    from search.study.runner import create_study, run_trials
    from search.study.storage import storage_label

    spec = load_space(space)
    log.info("study %r in %s", spec.study, storage_label(storage))
    study = create_study(spec, storage)
    summary = run_trials(study, spec, storage_url=storage, n_trials=n_trials, timeout=timeout, device=device,
                         weights_dir=weights_dir, worker_seed=spec.seed)
    _print_done(study, spec, summary, storage)


def _print_done(study: Any, spec: Any, summary: Any, storage: str | None) -> None:
    from search.study.storage import storage_label
    from search.summary import format_summary, study_summary

    counts = ", ".join(f"{k.lower()} {v}" for k, v in summary.counts.items())
    click.echo(f"\nthis process ran {summary.total} trial(s) in {summary.seconds:.0f}s: {counts}")
    click.echo(format_summary(study_summary(study, spec)))
    shown = storage_label(storage)
    click.echo(f"\nwatch it:   strategy-search dashboard --storage '{shown}'   (then open http://127.0.0.1:8080)")
    click.echo(f"export it:  strategy-search export {study.study_name} --storage '{shown}' -o best.yaml")


@main.command()
@click.argument("space", type=click.Path(dir_okay=False))
@storage_option
@_user_errors
def create(space: str, storage: str | None) -> None:
    """Create the study of SPACE (storing the space) so workers can join it."""
    from search.space import load_space
    from search.study.objective import Objective
    from search.study.runner import create_study
    from search.study.storage import storage_label

    spec = load_space(space)
    Objective(spec, device="cpu").check_ready()
    create_study(spec, storage)
    click.echo(f"study {spec.study!r} ready in {storage_label(storage)}; "
               f"start workers with: strategy-search worker {spec.study}")


@main.command()
@click.argument("study_name", metavar="STUDY")
@storage_option
@click.option("--n-trials", type=click.IntRange(min=1), default=None, help="Override the study's trial budget.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None)
@device_option
@weights_option
@_user_errors
def worker(study_name: str, storage: str | None, n_trials: int | None, timeout: float | None,
           device: str | None, weights_dir: str | None) -> None:
    """Join STUDY and run trials until its budget is used up."""
    from search.study.runner import load_study, run_trials, worker_seed_for

    study, spec = load_study(study_name, storage)
    summary = run_trials(study, spec, storage_url=storage, n_trials=n_trials, timeout=timeout, device=device,
                         weights_dir=weights_dir, worker_seed=worker_seed_for(spec))
    counts = ", ".join(f"{k.lower()} {v}" for k, v in summary.counts.items())
    click.echo(f"worker done: {summary.total} trial(s) in {summary.seconds:.0f}s: {counts}")


@main.command()
@click.argument("study_name", metavar="STUDY")
@storage_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--details", is_flag=True, help="Per-class metrics and confusion matrices.")
@_user_errors
def best(study_name: str, storage: str | None, as_json: bool, details: bool) -> None:
    """Show the best trial of STUDY (the Pareto front for several objectives)."""
    from search.study.runner import load_study
    from search.summary import format_summary, study_summary

    study, spec = load_study(study_name, storage)
    summary = study_summary(study, spec)
    click.echo(json.dumps(summary, indent=2) if as_json else format_summary(summary, details=details))


@main.command()
@click.argument("study_name", metavar="STUDY")
@storage_option
@click.option("-o", "--output", default="best.yaml", show_default=True, type=click.Path(dir_okay=False))
@click.option("--trial", "trial_number", type=int, default=None, help="Export this trial instead of the best.")
@_user_errors
def export(study_name: str, storage: str | None, output: str, trial_number: int | None) -> None:
    """Write the best trial of STUDY as a complete, runnable space file."""
    from search.export import export_config, write_config
    from search.study.runner import load_study

    study, spec = load_study(study_name, storage)
    trial = None
    if trial_number is not None:
        matches = [t for t in study.get_trials(deepcopy=False) if t.number == trial_number]
        if not matches:
            raise UserError(f"study {study_name!r} has no trial {trial_number}")
        trial = matches[0]
    path = write_config(export_config(study, spec, trial), output)
    click.echo(f"wrote {path}")


@main.command()
@storage_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@_user_errors
def dashboard(storage: str | None, host: str, port: int) -> None:
    """Serve optuna-dashboard on the same storage."""
    from optuna_dashboard import run_server

    from search.study.storage import open_storage, storage_label

    store = open_storage(storage, heartbeat=False)
    log.info("optuna-dashboard for %s on http://%s:%d", storage_label(storage), host, port)
    run_server(store, host=host, port=port)


@main.command()
@click.argument("data")
@click.option("--objective", default="accuracy", show_default=True, metavar="SPEC",
              help="As in a space file: a metric, or YAML like '{metric: f1, average: binary, positive_class: x}'.")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True, help="Baseline epochs.")
@click.option("--limit", type=click.IntRange(min=10), default=None, help="Use at most this many images.")
@click.option("--val-fraction", type=float, default=None, help="Validation share (default 0.2).")
@click.option("--test-fraction", type=float, default=None, help="Test share (default 0.2).")
@click.option("--set", "overrides", multiple=True, metavar="PARAM=VALUE",
              help="Change the baseline, e.g. --set width=32 --set lr=0.003 (repeatable).")
@click.option("--no-probe", is_flag=True, help="Skip the gray-vs-rgb probe (one more training run).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write a recommended space file here.")
@click.option("--study", "study_name", default=None, help="Study name in the written space (default: DATA-doctor).")
@click.option("--n-trials", type=click.IntRange(min=1), default=30, show_default=True,
              help="Trial budget in the written space.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@device_option
@weights_option
@_user_errors
def doctor(data: str, objective: str, epochs: int, limit: int | None, val_fraction: float | None,
           test_fraction: float | None, overrides: tuple[str, ...], no_probe: bool, output: str | None,
           study_name: str | None, n_trials: int, as_json: bool, device: str | None, weights_dir: str | None) -> None:
    """Train a quick baseline on DATA (built-in name or image folder) and diagnose what to fix."""
    from pathlib import Path

    import yaml

    from search.data.datasets import BUILTIN_DATASETS
    from search.doctor import diagnose, format_report, recommend_space
    from search.space import parse_space

    dataset: dict[str, Any] = {"name": data} if data in BUILTIN_DATASETS else {"path": data}
    for key, value in (("limit", limit), ("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if value is not None:
            dataset[key] = value
    try:
        wanted = yaml.safe_load(objective)
        changes = {}
        for item in overrides:
            key, sep, value = item.partition("=")
            if not sep:
                raise UserError(f"--set {item!r}: expected PARAM=VALUE, e.g. --set width=32")
            changes[key.strip()] = yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise UserError(f"--objective / --set: not valid YAML: {exc}".splitlines()[0]) from None
    if isinstance(wanted, list):
        raise UserError("--objective: doctor diagnoses one quality metric, not a list")
    spec = parse_space({"study": "doctor", "dataset": dataset, "objective": wanted},
                       source="doctor options", base_dir=Path.cwd())
    diagnosis = diagnose(spec.dataset, spec.objectives[0], epochs=epochs, overrides=changes, device=device,
                         probe_colour=not no_probe, weights_dir=weights_dir)
    result = diagnosis.to_dict()
    if output:
        name = study_name or f"{Path(data).name}-doctor"
        Path(output).write_text(recommend_space(diagnosis, name, n_trials), encoding="utf-8")
        result["space"] = output
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
        return
    click.echo(format_report(diagnosis))
    if output:
        click.echo(f"\nrecommended space written to {output}: strategy-search run {output}")


@main.command("ablate")
@click.argument("study_name", metavar="STUDY")
@storage_option
@click.option("--seeds", type=click.IntRange(min=2), default=3, show_default=True, help="Fresh seeds per config.")
@click.option("--budget-epochs", type=click.IntRange(min=1), default=None,
              help="Train every run for N epochs (default: the best trial's).")
@click.option("--trial", "trial_number", type=int, default=None, help="Ablate this trial instead of the best.")
@click.option("--only", default=None, metavar="P1,P2", help="Ablate only these params.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@device_option
@weights_option
@_user_errors
def ablate_command(study_name: str, storage: str | None, seeds: int, budget_epochs: int | None,
                   trial_number: int | None, only: str | None, as_json: bool, device: str | None,
                   weights_dir: str | None) -> None:
    """Switch each strategy of the best trial off in turn and measure what it was worth."""
    from search.ablate import ablate, format_ablation
    from search.study.runner import load_study

    study, spec = load_study(study_name, storage)
    trial = _trial(study, trial_number) if trial_number is not None else None
    names = [n.strip() for n in only.split(",") if n.strip()] if only else None
    record = ablate(study, spec, seeds=seeds, budget_epochs=budget_epochs, trial=trial, only=names,
                    device=device, weights_dir=weights_dir)
    click.echo(json.dumps(record, indent=2, default=str) if as_json else format_ablation(record))


@main.command("confirm")
@click.argument("study_name", metavar="STUDY")
@storage_option
@click.option("--top", type=click.IntRange(min=1), default=5, show_default=True, help="Trials to retrain.")
@click.option("--seeds", type=click.IntRange(min=2), default=3, show_default=True, help="Fresh seeds per trial.")
@click.option("--budget-epochs", type=click.IntRange(min=1), default=None,
              help="Train every run for N epochs (default: each trial's).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@device_option
@weights_option
@_user_errors
def confirm_command(study_name: str, storage: str | None, top: int, seeds: int, budget_epochs: int | None,
                    as_json: bool, device: str | None, weights_dir: str | None) -> None:
    """Retrain the top trials of STUDY with fresh seeds and rank them by mean, not by luck."""
    from search.confirm import confirm, format_confirmation
    from search.study.runner import load_study

    study, spec = load_study(study_name, storage)
    record = confirm(study, spec, top=top, seeds=seeds, budget_epochs=budget_epochs, device=device,
                     weights_dir=weights_dir)
    click.echo(json.dumps(record, indent=2, default=str) if as_json else format_confirmation(record))


def _trial(study: Any, number: int) -> Any:
    matches = [t for t in study.get_trials(deepcopy=False) if t.number == number]
    if not matches:
        raise UserError(f"study {study.study_name!r} has no trial {number}")
    return matches[0]


if __name__ == "__main__":  # pragma: no cover
    main()
