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
@click.option("--gpus", default=None, metavar="all|0,1,3",
              help="Start one worker process per GPU, each pinned with CUDA_VISIBLE_DEVICES.")
@click.option("--per-gpu", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes per GPU (with --gpus).")
@click.option("--processes", type=click.IntRange(min=1), default=None, help="Start N worker processes on the CPU.")
@click.option("--heartbeat", type=click.IntRange(min=1), envvar="STRATEGY_SEARCH_HEARTBEAT", default=None,
              metavar="S", help="Heartbeat interval of running trials (default 10; env STRATEGY_SEARCH_HEARTBEAT).")
@click.option("--grace", type=click.IntRange(min=1), envvar="STRATEGY_SEARCH_GRACE", default=None, metavar="S",
              help="A trial without heartbeat for S seconds is failed and retried once "
                   "(default 30; env STRATEGY_SEARCH_GRACE).")
@click.option("--connect-timeout", type=click.FloatRange(min=0, min_open=True), default=None, metavar="S",
              envvar="STRATEGY_SEARCH_CONNECT_TIMEOUT",
              help="Keep retrying an unreachable database for S seconds (default 30).")
@_user_errors
def worker(study_name: str, storage: str | None, n_trials: int | None, timeout: float | None,
           device: str | None, weights_dir: str | None, gpus: str | None, per_gpu: int, processes: int | None,
           heartbeat: int | None, grace: int | None, connect_timeout: float | None) -> None:
    """Join STUDY and run trials until its budget is used up (--gpus/--processes: several workers)."""
    from search.study.storage import open_storage
    from search.study.workers import (INTERRUPTED_EXIT, label_logs, launch, plan_workers, require_study,
                                      stop_on_sigterm)

    several = gpus is not None or processes is not None
    if several and device is not None:
        raise UserError("--device cannot be combined with --gpus/--processes (they choose each worker's device)")
    specs = plan_workers(gpus=gpus, per_gpu=per_gpu, processes=processes) if several else []
    # Connect before importing torch (seconds): an unreachable database is reported sooner.
    store = open_storage(storage, heartbeat_interval=heartbeat, grace_period=grace, connect_timeout=connect_timeout)
    if several:
        require_study(study_name, store)  # once here, not once per worker
        report = launch(study_name, specs, storage=storage, options={
            "n_trials": n_trials, "timeout": timeout, "weights_dir": weights_dir, "heartbeat": heartbeat,
            "grace": grace, "connect_timeout": connect_timeout})
        click.echo(report.format())
        sys.exit(report.exit_code)
    from search.study.runner import WorkerInterrupted, load_study, run_trials, worker_seed_for

    study, spec = load_study(study_name, store)
    label_logs()
    stop_on_sigterm()
    try:
        summary = run_trials(study, spec, storage_url=storage, n_trials=n_trials, timeout=timeout, device=device,
                             weights_dir=weights_dir, worker_seed=worker_seed_for(spec))
    except WorkerInterrupted as exc:
        summary = exc.summary
        counts = ", ".join(f"{k.lower()} {v}" for k, v in summary.counts.items())
        click.echo(f"worker interrupted: {summary.total} trial(s) in {summary.seconds:.0f}s: {counts}; "
                   "the running trial was recorded FAIL and queued again", err=True)
        sys.exit(INTERRUPTED_EXIT)
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


if __name__ == "__main__":  # pragma: no cover
    main()
