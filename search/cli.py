"""The ``strategy-search`` command: parses arguments and calls the library."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sys
import traceback
from typing import Any, Callable, Iterator

import click

from search import __version__

from search.core import redact
from search.core.errors import UserError
from search.core.terminal import TerminalFilter, printable

log = logging.getLogger("search")
INTERRUPTED_EXIT = 130  # after Ctrl-C, as shells expect (search.study.workers uses the same for its launcher)

storage_option = click.option(
    "--storage", envvar="STRATEGY_SEARCH_STORAGE", default=None, metavar="URL",
    help="Study storage (default sqlite:///studies.db; env STRATEGY_SEARCH_STORAGE).",
)
device_option = click.option("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available).")
weights_option = click.option("--weights-dir", default=None, type=click.Path(file_okay=True),
                              help="Local directory with pretrained backbone weights.")
artifacts_option = click.option(
    "--artifacts", envvar="STRATEGY_SEARCH_ARTIFACTS", default=None, metavar="URL",
    help="Artifact store of the kept trials' files: file:///path, s3://bucket/prefix or gs://bucket/prefix "
         "(default: the space's artifacts:, else artifacts/ beside a SQLite file; env STRATEGY_SEARCH_ARTIFACTS). "
         "S3 endpoint and credentials come from the AWS environment variables or config, never the URL.",
)


ALL_TRIALS_FAILED_EXIT = 3  # run: every trial this process ran failed


def echo(message: Any = None, err: bool = False, **kwargs: Any) -> None:
    """``click.echo`` with control characters escaped: class names, file names and trial data come from
    users' files and databases, and an escape sequence among them must be shown, not obeyed."""
    click.echo(None if message is None else printable(str(message)), err=err, **kwargs)


def _user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn library errors into one line on stderr and exit code 2; keep secrets out of any output."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        redact.remember_url(kwargs.get("storage") or os.environ.get("STRATEGY_SEARCH_STORAGE"))
        redact.remember_environment()
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            echo("error: " + redact.scrub(str(exc)).replace("\n", " "), err=True)
            sys.exit(2)
        except KeyboardInterrupt:  # not click's "Aborted!": nothing failed, the user stopped it
            label = _launcher_label()
            echo(f"[{label}] interrupted before its first trial" if label else
                       "\ninterrupted before the command finished; run it again to start over", err=True)
            sys.exit(INTERRUPTED_EXIT)
        except BrokenPipeError:
            _closed_pipe()
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception:  # a bug: show the traceback, but never a password in it
            echo(redact.scrub(traceback.format_exc()).rstrip(), err=True)
            sys.exit(1)

    return wrapper


BROKEN_PIPE_EXIT = 128 + 13  # what a shell reports for a Unix tool killed by SIGPIPE


def _closed_pipe() -> None:
    """The reader went away (``predict ... | head``): stop quietly, as Unix tools do on SIGPIPE.

    Output still buffered for the closed pipe would fail again when Python flushes it at exit, so
    stdout is pointed at /dev/null first (Python's documented recipe for SIGPIPE).
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real stdout (an in-process runner): nothing to flush
        pass
    sys.exit(BROKEN_PIPE_EXIT)


def _launcher_label() -> str | None:
    """The label (``cpu0``, ``gpu1``) of a worker that ``worker --processes/--gpus`` started, else None."""
    return os.environ.get("STRATEGY_SEARCH_WORKER_LABEL")  # runner.WORKER_LABEL_ENV (not imported: torch)


def _print_interrupted(summary: Any) -> None:
    """What an interrupted run/worker did, and that the same command resumes the study."""
    from search.records import format_counts

    label = _launcher_label()  # a worker the launcher started: the launcher sums up for all
    tag = f"[{label}] " if label else ""
    counts = format_counts((k, v) for k, v in summary.counts.items() if v)
    echo(("" if label else "\n") + f"{tag}interrupted after {summary.seconds:.0f}s: this process finished "
               f"{summary.total} trial(s)" + (f" ({counts})" if counts else ""), err=True)
    for number in summary.requeued:
        echo(f"{tag}trial {number} was stopped mid-training: recorded FAIL (interrupted) and queued again, "
                   "it runs first when the study resumes", err=True)
    if not label:
        echo(f"study {summary.study!r} keeps every finished trial: run the same command again to resume it",
                   err=True)


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    # Our messages at `level`; other libraries' log lines (matplotlib's categorical-axis notes, alembic,
    # PIL) and Python warnings only with -v, errors always.
    logging.basicConfig(level=level if verbose else logging.ERROR, format="%(asctime)s %(message)s",
                        datefmt="%H:%M:%S", force=True)
    logging.getLogger("search").setLevel(level)
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(logging.NOTSET if verbose else logging.ERROR)
    # The S3 client's debug lines carry signed request headers (the access key id): never shown.
    for name in ("botocore", "boto3", "s3transfer", "urllib3"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.NOTSET)
    for handler in logging.getLogger().handlers:
        handler.addFilter(redact.RedactFilter())
        handler.addFilter(TerminalFilter())
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="strategy-search")
@click.option("-v", "--verbose", count=True, help="Debug logging, with other libraries' log lines and warnings.")
@click.option("-q", "--quiet", is_flag=True, help="Warnings and errors only.")
@click.option("--cache-dir", type=click.Path(), default=None,  # (a file there: our own one-line error)
              help="Dataset cache folder for this command (default $STRATEGY_SEARCH_CACHE, else "
                   "~/.cache/strategy-search/data).")
def main(verbose: int, quiet: bool, cache_dir: str | None) -> None:
    """Search augmentation, input, architecture and training strategies for an image classifier."""
    _setup_logging(verbose, quiet)
    if cache_dir:
        # Through the environment, so worker processes started by this command use it too.
        os.environ["STRATEGY_SEARCH_CACHE"] = os.path.abspath(os.path.expanduser(cache_dir))


@main.command()
@click.argument("space", type=click.Path(dir_okay=False))
@storage_option
@click.option("--n-trials", type=click.IntRange(min=1), default=None, help="Study's total trial budget.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None, help="Stop after S seconds.")
@device_option
@weights_option
@artifacts_option
@click.option("--warm-start", "warm_from", default=None, metavar="STUDY",
              help="Copy STUDY's finished trials that fit this space into the new study before sampling (once).")
@click.option("--warm-storage", default=None, metavar="URL", help="Storage of the --warm-start study (default: --storage).")
@_user_errors
def run(space: str, storage: str | None, n_trials: int | None, timeout: float | None, device: str | None,
        weights_dir: str | None, artifacts: str | None, warm_from: str | None, warm_storage: str | None) -> None:
    """Create (or resume) the study of SPACE and run trials in this process."""
    from search.space.parse import load_space
    from search.study.runner import WorkerInterrupted, run_trials, worker_seed_for
    from search.study.create import create_or_resume
    from search.study.artifact_store import open_artifacts
    from search.storage.backend import storage_label
    from search.storage.resolved import StudyStorage
    from search.study.warmstart import check_warm_source, warm_start
    from search.study.workers import stop_on_sigterm

    if warm_storage is not None and warm_from is None:
        raise UserError("--warm-storage needs --warm-start STUDY")
    spec = load_space(space)
    if warm_from == spec.study and warm_storage is None:
        raise UserError(f"--warm-start {warm_from!r} is this study itself; name another study (or --warm-storage)")
    # Before the new study exists: a refused warm start leaves nothing behind.
    warm = check_warm_source(spec, warm_from, warm_storage or storage) if warm_from is not None else None
    log.info("study %r in %s", spec.study, storage_label(storage))
    files = open_artifacts(artifacts, spec.artifacts, storage, create=True) if spec.keep != "none" else None
    study, created = create_or_resume(spec, storage)
    if warm_from is not None:
        echo(warm_start(study, spec, warm_from, warm_storage or storage, checked=warm).format())
    # A fresh study replays from the space's seed; a resumed one (or one another process created) draws
    # from a state of its own, so no two trials of a study come from the same sampler state.
    seed = spec.seed if created else worker_seed_for(spec, len(study.get_trials(deepcopy=False)))
    stop_on_sigterm()  # `docker stop`, a scheduler's preemption: stop like Ctrl-C, not mid-write
    try:
        summary = run_trials(study, spec, storage=StudyStorage.of(study, storage), n_trials=n_trials,
                             timeout=timeout, device=device, weights_dir=weights_dir, worker_seed=seed,
                             artifacts=files)
    except WorkerInterrupted as exc:
        _print_interrupted(exc.summary)
        sys.exit(INTERRUPTED_EXIT)
    _print_done(study, spec, summary, storage)
    failed = summary.counts.get("FAIL", 0)
    if summary.total and failed == summary.total:
        echo(f"error: all {failed} trial(s) this process ran failed (see fail_reason above)", err=True)
        sys.exit(ALL_TRIALS_FAILED_EXIT)


def _storage_arg(storage: str | None) -> str:
    """`` --storage 'URL'`` (password masked) for a next-step command line, when a storage was given."""
    from search.storage.backend import storage_label

    return f" --storage '{storage_label(storage)}'" if storage is not None else ""


def _print_done(study: Any, spec: Any, summary: Any, storage: str | None) -> None:
    from search.storage.backend import storage_label
    from search.tools.summary import format_summary, study_summary
    from search.records import format_counts

    counts = format_counts(summary.counts.items())
    echo(f"\nthis process ran {summary.total} trial(s) in {summary.seconds:.0f}s: {counts}")
    echo(format_summary(study_summary(study, spec)))
    shown = storage_label(storage)
    echo(f"\nwatch it:   strategy-search dashboard --storage '{shown}'   (then open http://127.0.0.1:8080)")
    echo(f"export it:  strategy-search export {study.study_name} --storage '{shown}' -o best.yaml"
               "   (or -o best/ for weights, TorchScript and ONNX)")
    echo(f"report:     strategy-search report {study.study_name} --storage '{shown}' -o report.html")


@main.command()
@click.option("--markdown", is_flag=True, help="As a Markdown table (the docs' strategy catalogue).")
@_user_errors
def strategies(markdown: bool) -> None:
    """The strategy catalogue: every param a space file can search, its values and what it does."""
    from search.tools.catalogue import catalogue, format_catalogue

    echo(format_catalogue(catalogue(), markdown=markdown))


@main.command()
@click.argument("space", type=click.Path(dir_okay=False))
@storage_option
@_user_errors
def create(space: str, storage: str | None) -> None:
    """Create the study of SPACE (storing the space) so workers can join it."""
    # Nothing here imports torch (seconds): workers decode the dataset into its cache (search.study.readiness).
    from search.space.parse import load_space
    from search.study.readiness import check_data
    from search.study.create import create_study
    from search.storage.backend import storage_label

    spec = load_space(space)
    check_data(spec)
    study = create_study(spec, storage)
    existing = len(study.get_trials(deepcopy=False))
    echo(f"study {spec.study!r} ready in {storage_label(storage)}"
               + (f" (it already has {existing} trial(s); workers resume it)" if existing else ""))
    echo(f"start workers with: strategy-search worker {spec.study}{_storage_arg(storage)}   "
               "(--processes N or --gpus all for several; the same command on other machines)")
    echo(f"watch it:           strategy-search dashboard{_storage_arg(storage)}")


@main.command()
@click.argument("study_name", metavar="STUDY")
@storage_option
@click.option("--n-trials", type=click.IntRange(min=1), default=None, help="Override the study's trial budget.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None)
@device_option
@weights_option
@click.option("--gpus", default=None, metavar="all|0,1,3",
              help="Start one worker process per GPU, each pinned with CUDA_VISIBLE_DEVICES.")
@click.option("--per-gpu", default="1", show_default=True, metavar="K|auto",
              help="Worker processes per GPU (with --gpus); auto: as many as fit in memory, up to where "
                   "throughput stops rising (probed first).")
@click.option("--processes", type=click.IntRange(min=1), default=None,
              help="Start N worker processes on the CPU (at most one per core unless --force).")
@click.option("--heartbeat", type=click.IntRange(min=1), envvar="STRATEGY_SEARCH_HEARTBEAT", default=None,
              metavar="S", help="Heartbeat interval of running trials (default 10; env STRATEGY_SEARCH_HEARTBEAT).")
@click.option("--grace", type=click.IntRange(min=1), envvar="STRATEGY_SEARCH_GRACE", default=None, metavar="S",
              help="A trial without heartbeat for S seconds is failed and retried once "
                   "(default 30; env STRATEGY_SEARCH_GRACE).")
@click.option("--connect-timeout", type=click.FloatRange(min=0, min_open=True), default=None, metavar="S",
              envvar="STRATEGY_SEARCH_CONNECT_TIMEOUT",
              help="Keep retrying an unreachable database for S seconds (default 30).")
@artifacts_option
@click.option("--force", is_flag=True, help="Start more worker processes than CPU cores.")
@_user_errors
def worker(study_name: str, storage: str | None, n_trials: int | None, timeout: float | None,
           device: str | None, weights_dir: str | None, gpus: str | None, per_gpu: str, processes: int | None,
           heartbeat: int | None, grace: int | None, connect_timeout: float | None,
           artifacts: str | None, force: bool) -> None:
    """Join STUDY and run trials until its budget is used up (--gpus/--processes: several workers)."""
    from search.storage.backend import open_storage
    from search.study.workers import (AUTO, check_artifacts, follow_launcher, launch, pack, parse_per_gpu, plan_workers,
                                      require_study)

    follow_launcher()  # a worker that a launcher started ends with it
    several = gpus is not None or processes is not None
    if several and device is not None:
        raise UserError("--device cannot be combined with --gpus/--processes (they choose each worker's device)")
    specs = plan_workers(gpus=gpus, per_gpu=per_gpu, processes=processes, force=force) if several else []
    # Connect before importing torch (seconds): an unreachable database is reported sooner.
    store = open_storage(storage, heartbeat_interval=heartbeat, grace_period=grace, connect_timeout=connect_timeout)
    if several:
        require_study(study_name, store)  # once here, not once per worker
        check_artifacts(study_name, store, artifacts, storage)
        packing = None
        if gpus is not None and parse_per_gpu(per_gpu) == AUTO:
            specs, packing = pack(study_name, specs, storage=storage)
        report = launch(study_name, specs, storage=storage, options={
            "n_trials": n_trials, "timeout": timeout, "weights_dir": weights_dir, "heartbeat": heartbeat,
            "grace": grace, "connect_timeout": connect_timeout, "artifacts": artifacts}, packing=packing)
        echo(report.format())
        if not report.interrupted:
            _print_next_after_workers(study_name, storage)
        sys.exit(report.exit_code)
    from search.records import format_counts
    from search.study.runner import WorkerInterrupted
    from search.study.workers import run_worker

    try:
        summary, study_counts = run_worker(study_name, store, storage_url=storage, n_trials=n_trials, timeout=timeout,
                                           device=device, weights_dir=weights_dir, artifacts=artifacts)
    except WorkerInterrupted as exc:
        _print_interrupted(exc.summary)
        sys.exit(INTERRUPTED_EXIT)
    echo(f"worker done: {summary.total} trial(s) in {summary.seconds:.0f}s: {format_counts(summary.counts.items())}")
    echo(f"study {study_name!r} now: {format_counts(sorted(study_counts.items()))}")
    if not _launcher_label():  # else the launcher that started this worker says it
        _print_next_after_workers(study_name, storage)


def _print_next_after_workers(study_name: str, storage: str | None) -> None:
    where = _storage_arg(storage)
    echo(f"see the best:  strategy-search best {study_name}{where}")
    echo(f"report:        strategy-search report {study_name}{where} -o report.html")


@main.command()
@click.argument("study_name", metavar="STUDY")
@storage_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--details", is_flag=True, help="Per-class metrics and confusion matrices.")
@click.option("--top", type=click.IntRange(min=1), default=None, metavar="N",
              help="Also a leaderboard of the N best completed trials.")
@_user_errors
def best(study_name: str, storage: str | None, as_json: bool, details: bool, top: int | None) -> None:
    """Show the best trial of STUDY (the Pareto front for several objectives)."""
    from search.study.load import load_study
    from search.tools.summary import format_leaderboard, format_summary, leaderboard, study_summary

    study, spec = load_study(study_name, storage)
    summary = study_summary(study, spec)
    if top is not None:
        summary["leaderboard"] = leaderboard(study, spec, top)
    if as_json:
        echo(json.dumps(summary, indent=2))
        return
    echo(format_summary(summary, details=details))
    if top is not None:
        echo(f"\ntop {top} (validation split; test accuracy holds for this test set only):")
        echo(format_leaderboard(summary["leaderboard"]))
    where = _storage_arg(storage)
    if not summary["best"]:
        echo(f"\nrun trials: strategy-search worker {study_name}{where}")
        return
    echo(f"\nexport it:  strategy-search export {study_name}{where} -o best/   "
               "(weights, TorchScript, ONNX; or -o best.yaml for the config only)")
    echo(f"check it:   strategy-search confirm {study_name}{where}   (re-trains the top trials on fresh seeds)")


@main.command()
@click.argument("study_name", metavar="STUDY")
@storage_option
@click.option("-o", "--output", default="best.yaml", show_default=True, type=click.Path(),
              help="A .yaml/.yml file (the config only) or a directory (config, weights, TorchScript, ONNX).")
@click.option("--trial", "trial_number", type=int, default=None, help="Export this trial instead of the best.")
@artifacts_option
@click.option("--checkpoints", envvar="STRATEGY_SEARCH_CHECKPOINTS", default=None, metavar="DIR",
              help="Also read models kept by versions before the artifact store (default: checkpoints/ beside a "
                   "SQLite file; env STRATEGY_SEARCH_CHECKPOINTS).")
@device_option
@weights_option
@click.option("--onnx/--no-onnx", default=True, show_default=True, help="Also write model.onnx.")
@click.option("--force", is_flag=True, help="Replace an existing config file or bundle, or write into a non-empty "
                                             "directory.")
@_user_errors
def export(study_name: str, storage: str | None, output: str, trial_number: int | None, artifacts: str | None,
           checkpoints: str | None, device: str | None, weights_dir: str | None, onnx: bool, force: bool) -> None:
    """Write the best trial of STUDY as a runnable space file, or as a production bundle in a directory."""
    from search.tools.export import export_config
    from search.artifacts.bundle import write_config
    from search.study.load import load_study
    from search.tools.summary import get_trial

    study, spec = load_study(study_name, storage)
    trial = get_trial(study, trial_number) if trial_number is not None else None
    if output.lower().endswith((".yaml", ".yml")):
        path = write_config(export_config(study, spec, trial), output, force=force)
        echo(f"wrote {path}")
        echo(f"re-train it: strategy-search train {path}   (checks that it reproduces the trial's score; "
                   "-o DIR/ also writes weights, TorchScript and ONNX)")
        return
    _export_bundle(study, spec, trial, output, storage, artifacts, checkpoints, device, weights_dir, onnx, force)


def _export_bundle(study: Any, spec: Any, trial: Any, output: str, storage: str | None, artifacts: str | None,
                   checkpoints: str | None, device: str | None, weights_dir: str | None, onnx: bool,
                   force: bool) -> None:
    from search.storage.backend import checkpoint_root
    from search.study.artifact_store import open_artifacts
    from search.tools.export import export_bundle

    files = open_artifacts(artifacts, spec.artifacts, storage)
    # Without --artifacts (or its env), each trial's files come from the store its worker recorded.
    done = export_bundle(study, spec, output, trial, artifacts=files, follow_records=artifacts is None,
                         legacy_checkpoints=checkpoint_root(storage, checkpoints), device=device,
                         weights_dir=weights_dir, onnx=onnx, force=force)
    echo(f"exported trial {done.trial} of study {study.study_name} to {done.directory}/")
    echo(f"  weights: {done.reason}")
    if done.value_diff is not None:
        echo(f"  re-trained {spec.objectives[0].name} differs from the recorded value by {done.value_diff:.2e}")
    echo("  files: " + ", ".join(done.files))
    for name, diff in done.checks.items():
        echo(f"  {name}: max |logit diff| vs PyTorch {diff:.2e}")
    for note in done.notes:
        echo(f"  note: {note}")
    echo(f"predict with: strategy-search predict {done.directory} IMAGES...")


@main.command()
@storage_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--allow-writes", is_flag=True,
              help="Let the dashboard change the storage (notes, trial states, deleting studies); "
                   "without it, it is read-only.")
@artifacts_option
@_user_errors
def dashboard(storage: str | None, host: str, port: int, allow_writes: bool, artifacts: str | None) -> None:
    """Serve optuna-dashboard on the same storage (read-only unless --allow-writes), with the trials' files."""
    from search.tools.dashboard import serve

    def ready(label: str, files: str) -> None:
        mode = "read-write" if allow_writes else "read-only (--allow-writes to change studies from it)"
        echo(f"optuna-dashboard for {label} (trial files: {files}), {mode}: open http://{host}:{port} "
                   "in a browser (Ctrl-C stops it)")

    serve(storage, host, port, allow_writes=allow_writes, artifacts=artifacts, on_ready=ready)  # until Ctrl-C
    echo("dashboard stopped; the studies are unchanged", err=True)


@main.command("storage-proxy")
@click.option("--storage", envvar="STRATEGY_SEARCH_STORAGE", default=None, metavar="URL",
              help="The database behind the proxy (env STRATEGY_SEARCH_STORAGE).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; a non-loopback one needs --allow-remote.")
@click.option("--port", required=True, type=click.IntRange(1, 65535), help="Port to listen on (not one in use).")
@click.option("--allow-remote", is_flag=True,
              help="Listen on a non-loopback --host, reachable from other machines: needs a token (and TLS on a "
                   "network you do not trust).")
@click.option("--token-file", default=None, metavar="FILE", type=click.Path(dir_okay=False),
              help="Shared secret workers must send (else $STRATEGY_SEARCH_PROXY_TOKEN or the file named by "
                   "$STRATEGY_SEARCH_PROXY_TOKEN_FILE; never on the command line). Workers send it from "
                   "$STRATEGY_SEARCH_PROXY_TOKEN.")
@click.option("--tls-cert", default=None, metavar="FILE", type=click.Path(dir_okay=False),
              help="Serve TLS with this PEM certificate (with --tls-key); workers trust it through "
                   "$STRATEGY_SEARCH_PROXY_CA.")
@click.option("--tls-key", default=None, metavar="FILE", type=click.Path(dir_okay=False),
              help="The PEM private key of --tls-cert.")
@click.option("--heartbeat", type=click.IntRange(min=1), envvar="STRATEGY_SEARCH_HEARTBEAT", default=None,
              metavar="S", help="Workers' heartbeat interval (default 10; env STRATEGY_SEARCH_HEARTBEAT).")
@click.option("--grace", type=click.IntRange(min=1), envvar="STRATEGY_SEARCH_GRACE", default=None, metavar="S",
              help="Fail and retry a trial without heartbeat for S seconds (default 30; env STRATEGY_SEARCH_GRACE).")
@click.option("--connect-timeout", type=click.FloatRange(min=0, min_open=True), default=None, metavar="S",
              envvar="STRATEGY_SEARCH_CONNECT_TIMEOUT", help="Keep retrying an unreachable database for S seconds.")
@_user_errors
def storage_proxy(storage: str | None, host: str, port: int, allow_remote: bool, token_file: str | None,
                  tls_cert: str | None, tls_key: str | None, heartbeat: int | None, grace: int | None,
                  connect_timeout: float | None) -> None:
    """Serve the storage to workers at grpc://HOST:PORT (they need no database credentials)."""
    from search.storage.proxy import serve

    serve(storage, host, port, heartbeat_interval=heartbeat, grace_period=grace, connect_timeout=connect_timeout,
          allow_remote=allow_remote, token_file=token_file, tls_cert=tls_cert, tls_key=tls_key)


@main.command("train")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--data", "data_dir", default=None, type=click.Path(file_okay=False),
              help="Train on this ImageFolder directory instead of the config's dataset (split the same way).")
@click.option("--full", is_flag=True, help="Train on train+val (validation is then no longer held out).")
@click.option("-o", "--output", default=None, type=click.Path(file_okay=False),
              help="Write the trained model here as an export bundle.")
@device_option
@weights_option
@click.option("--onnx/--no-onnx", default=True, show_default=True, help="Also write model.onnx (with -o).")
@click.option("--force", is_flag=True, help="With -o: replace an existing bundle or write into a non-empty directory.")
@_user_errors
def train_cmd(config: str, data_dir: str | None, full: bool, output: str | None, device: str | None,
              weights_dir: str | None, onnx: bool, force: bool) -> None:
    """Re-train the configuration CONFIG (an exported config.yaml) and compare with its source trial."""
    from search.tools.retrain import retrain

    done = retrain(config, data_dir=data_dir, full=full, device=device, weights_dir=weights_dir, output=output,
                   onnx=onnx, force=force)
    space, result = done.space, done.result
    source = dict(space.raw.get("source") or {})
    origin = f" (trial {source['trial']} of study {source['study']})" if "trial" in source else ""
    echo(f"trained {space.study}{origin} on {done.device} in {done.seconds:.2f}s")
    values = "  ".join(f"{o.name} {v:.6f}" for o, v in zip(space.objectives, result.values))
    held = "NOT held out: --full trained on it" if full else "held out"
    echo(f"validation ({held}): {values}")
    for c in done.comparisons:
        verdict = "timing, not compared" if c.matches is None else (
            f"reproduced within {c.tolerance:g}" if c.matches else f"DIFFERS by more than {c.tolerance:g}")
        echo(f"  {c.name}: source trial {c.source:.6f}, this run {c.value:.6f}, diff {c.diff:.2e} ({verdict})")
    if result.test is not None:
        t = result.test
        echo(f"test: accuracy {t.accuracy:.4f}  f1 (macro) {t.score('f1'):.4f}  (n={t.n}; holds for this "
                   "test set only)")
    if done.written is not None:
        written = done.written
        echo(f"wrote {output}/: " + ", ".join(written["files"]))
        for note in written["notes"]:
            echo(f"  note: {note}")
    if done.reproduced is False:
        echo("not reproduced: the re-trained values differ from the source trial's beyond the tolerance "
                   "(a different device or library version can do this); exit code 1", err=True)
        sys.exit(1)
    if output:
        echo(f"predict with: strategy-search predict {output} IMAGES...")
    else:
        echo(f"keep the model: strategy-search train {config} -o DIR/   (weights, TorchScript, ONNX)")


@main.command()
@click.argument("export_dir", type=click.Path(file_okay=False))
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (all class probabilities).")
@click.option("--strict", is_flag=True, help="Stop with exit code 2 at the first unreadable image "
                                             "(default: skip it, name it on stderr, go on).")
@device_option
@_user_errors
def predict(export_dir: str, images: tuple[str, ...], as_json: bool, strict: bool, device: str | None) -> None:
    """Classify IMAGES (files or folders) with the model exported to EXPORT_DIR.

    Unreadable images are skipped and named on stderr; the exit code is 2 only when none could be
    read (or, with --strict, when any could not).
    """
    from search.artifacts.bundle import load_core
    from search.tools.predict import Unreadable, image_files, iter_predictions, nothing_readable
    from search.train.loop import resolve_device

    bundle = load_core(export_dir)
    files = image_files(images)
    found, skipped = [], []
    width = max(len(str(f)) for f in files)
    for item in iter_predictions(bundle, files, resolve_device(device), strict=strict):
        if isinstance(item, Unreadable):
            skipped.append(item)
            if found:  # (before the first prediction they wait: if none comes, one error line says it)
                echo(f"skipped {item.path}: not a readable image ({item.why})", err=True)
            continue
        if not found:
            for early in skipped:
                echo(f"skipped {early.path}: not a readable image ({early.why})", err=True)
        found.append(item)
        if not as_json:
            echo(f"{item.path:<{width}}  {item.label}  {item.probability:.4f}")  # as it comes: pipes see it
    if not found:
        raise nothing_readable(skipped)
    if as_json:
        echo(json.dumps([r.to_dict() for r in found], indent=2))
    if skipped:
        echo(f"{len(skipped)} of {len(files)} image(s) unreadable and skipped (named above; --strict stops "
                   "at the first)", err=True)


@main.command()
@click.argument("study_name", metavar="STUDY")
@storage_option
@click.option("-o", "--output", default="report.html", show_default=True, type=click.Path(),
              help="The HTML file (a directory is refused with a one-line error).")
@click.option("--png/--no-png", default=True, show_default=True, help="Also write PNGs into <name>_png/.")
@artifacts_option
@click.option("--force", is_flag=True, help="Overwrite an existing report file and PNGs of the same names.")
@_user_errors
def report(study_name: str, storage: str | None, output: str, png: bool, artifacts: str | None, force: bool) -> None:
    """Write an HTML report of STUDY (opens offline) and PNG figures."""
    from search.tools.report import write_report
    from search.tools.report.build import check_outputs
    from search.study.load import load_study
    from search.study.artifact_store import open_artifacts

    check_outputs(output, png, force)  # before the study is even read: a refused file fails at once
    study, spec = load_study(study_name, storage)
    done = write_report(study, spec, output, png=png, artifacts=open_artifacts(artifacts, spec.artifacts, storage),
                        follow_records=artifacts is None, force=force)
    size = done.html.stat().st_size / 1e6
    echo(f"wrote {done.html} ({size:.1f} MB; sections: {', '.join(done.sections)})")
    if done.pngs:
        echo(f"wrote {len(done.pngs)} PNG(s) in {done.pngs[0].parent}/")
    for note in done.notes:
        echo(f"note: {note}")
    echo(f"open it in a browser (works offline): {done.html.resolve().as_uri()}")


@main.command()
@click.argument("data")
@click.option("--objective", default=None, metavar="SPEC",
              help="As in a space file: a metric, or YAML like '{metric: f1, average: binary, positive_class: x}' "
                   "(default: accuracy).")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Baseline epochs (default: half the recipe's for this data, at least 8).")
@click.option("--budget", default=None, metavar="TIME",
              help="Time for doctor and search together, e.g. 15m or 1h: the written space's trials, epochs and "
                   "pruner are sized to it from the baseline's measured epoch time (budget.time).")
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
@click.option("--force", is_flag=True, help="With -o: replace an existing file.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@device_option
@weights_option
@_user_errors
def doctor(data: str, objective: str | None, epochs: int | None, budget: str | None, limit: int | None,
           val_fraction: float | None,
           test_fraction: float | None, overrides: tuple[str, ...], no_probe: bool, output: str | None,
           study_name: str | None, n_trials: int, force: bool, as_json: bool, device: str | None,
           weights_dir: str | None) -> None:
    """Train a quick baseline on DATA (built-in name, image folder or CSV manifest) and diagnose what to fix."""
    from search.tools.doctor import run_doctor

    done = run_doctor(data, objective=objective, epochs=epochs, limit=limit, val_fraction=val_fraction,
                      test_fraction=test_fraction, overrides=overrides, probe_color=not no_probe, output=output,
                      study_name=study_name, n_trials=n_trials, force=force, device=device, weights_dir=weights_dir,
                      budget=budget)
    echo(json.dumps(done.record, indent=2, default=str) if as_json else done.text)


@contextlib.contextmanager
def _resumable(study_name: str) -> Iterator[None]:
    """Ctrl-C during ablate/confirm: say that the finished runs are kept and how to resume."""
    try:
        yield
    except KeyboardInterrupt:
        echo(f"\ninterrupted: every finished run is stored with study {study_name!r}; run the same command "
                   "again to resume (only the missing runs train)", err=True)
        sys.exit(INTERRUPTED_EXIT)


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
    from search.tools.ablate import ablate, format_ablation
    from search.study.load import load_study
    from search.tools.summary import get_trial

    study, spec = load_study(study_name, storage)
    trial = get_trial(study, trial_number) if trial_number is not None else None
    names = [n.strip() for n in only.split(",") if n.strip()] if only else None
    with _resumable(study_name):
        record = ablate(study, spec, seeds=seeds, budget_epochs=budget_epochs, trial=trial, only=names,
                        device=device, weights_dir=weights_dir)
    if as_json:
        echo(json.dumps(record.to_dict(), indent=2, default=str))
        return
    echo(format_ablation(record))
    echo(f"\nstored in study {study_name!r}; chart it: "
               f"strategy-search report {study_name}{_storage_arg(storage)} -o report.html")


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
    from search.tools.confirm import confirm, format_confirmation, winner_model_note
    from search.study.load import load_study

    study, spec = load_study(study_name, storage)
    with _resumable(study_name):
        record = confirm(study, spec, top=top, seeds=seeds, budget_epochs=budget_epochs, device=device,
                         weights_dir=weights_dir)
    if as_json:
        echo(json.dumps(record.to_dict(), indent=2, default=str))
        return
    echo(format_confirmation(record))
    note = winner_model_note(study, spec, record)
    if note:
        echo(f"note: {note}")
    echo(f"\nexport the winner: strategy-search export {study_name}{_storage_arg(storage)} -o best/")



@main.group("weights")
def weights_group() -> None:
    """Pretrained backbone weights for machines without internet."""


@weights_group.command("fetch")
@click.argument("names", nargs=-1, required=True)
@click.option("-o", "--output", type=click.Path(), default=None, metavar="DIR",
              help="Folder for NAME.safetensors (default ~/.cache/strategy-search/weights, read by trials "
                   "when no weights_dir is given).")
@click.option("--force", is_flag=True, help="Replace existing NAME.safetensors files.")
@_user_errors
def weights_fetch(names: tuple[str, ...], output: str | None, force: bool) -> None:
    """Save the timm backbones NAMES' pretrained weights as DIR/NAME.safetensors (needs internet)."""
    from search.tools.weights import fetch_weights

    for path in fetch_weights(names, output, force=force):
        echo(f"wrote {path}")


@main.command("cache")
@click.argument("data", required=False)
@click.option("--input-size", "sizes", default=None, metavar="N[,N...]",
              help="Input sizes to build (default: the images' own square size, else 64).")
@click.option("--aspect", "aspects", default="stretch", show_default=True, metavar="stretch|pad[,...]",
              help="Aspect modes to build.")
@click.option("--cache-dir", type=click.Path(), default=None,
              help="Cache folder (default $STRATEGY_SEARCH_CACHE, else ~/.cache/strategy-search/data).")
@click.option("--verify", is_flag=True,
              help="Also decode every image again and compare its pixels with the cache (catches an image "
                   "changed behind a restored size and mtime); rebuild what differs.")
@click.option("--list", "list_", is_flag=True, help="Show what is stored, with the size on disk per dataset.")
@click.option("--clear", is_flag=True, help="Delete the stored entries: all, or DATA's only (only files the "
                                            "cache wrote, in folders it made).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_user_errors
def cache_cmd(data: str | None, sizes: str | None, aspects: str, cache_dir: str | None, verify: bool, list_: bool,
              clear: bool, as_json: bool) -> None:
    """Build (or check) the dataset cache for DATA ahead of a run; --list / --clear manage it."""
    from search.data.datasets import dataset_doc
    from search.tools.dataset_cache import build_or_check, clear_entries, format_listing, listing

    if list_:
        rows = listing(cache_dir)
        echo(json.dumps(rows, indent=2) if as_json else format_listing(rows, cache_dir))
        return
    dataset = dataset_doc(data) if data else None
    if clear:
        freed, where = clear_entries(cache_dir, dataset)
        echo(f"freed {freed / 1e6:.1f} MB ({where})")
        return
    if dataset is None:
        raise UserError("cache: give DATA (a built-in name, image folder or .csv manifest), or --list / --clear")
    rows = build_or_check(dataset, sizes, aspects, cache_dir, verify=verify)
    if as_json:
        echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        changed = f", {r['changed']} changed image(s)" if r["changed"] else ""
        echo(f"{r['state']:>8}  {r['dataset']}  {r['size']}px {r['aspect']}: {r['images']} images, "
                   f"{r['bytes'] / 1e6:.1f} MB, {r['skipped']} unreadable skipped{changed}, {r['seconds']:.1f}s  "
                   f"{r['path']}")


if __name__ == "__main__":  # pragma: no cover
    main()
