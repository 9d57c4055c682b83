"""An RDB storage that keeps the RUNNING trials this process created, so reading them costs no queries.

A worker reads its own running trial back three times per trial (``optuna.Trial`` when it opens,
``study.tell`` before and after it writes the state): 6 SELECTs and a transaction each, and with
many workers on one database the queries queue on the server's cores. Only the creating process
writes to a trial while it runs (its params, reports, attrs and state all go through this object),
so a copy kept up to date by those writes equals the stored trial. Every write still goes to the
database first and is mirrored only once it succeeded.

The one writer from outside is another worker failing the trial as stale (missed heartbeats). The
database then refuses this process's next write to it with ``UpdateFinishedTrialError``; the copy
is dropped there and the trial is read from the database from then on.

On PostgreSQL two more round-trip savings build on the copy: a write to an owned trial is one
autocommit ``INSERT ... SELECT ... WHERE EXISTS (trial not finished)`` instead of Optuna's
transaction of lookup, state check and insert; and :meth:`OwnedTrialsStorage.counted_creation`
counts the budget and creates a trial in one transaction that takes the study's lock.

A lost connection (a database restart, ``pg_terminate_backend``) does not fail the trial: every
call here is retried on a fresh connection until ``--connect-timeout`` (:mod:`search.storage.retry`).
The writes are upserts, so a retry of one that was committed before the connection died writes the
same row again; a trial's final state and a counted creation are looked up before they are retried.

:meth:`OwnedTrialsStorage.fail_running` fails a running trial and queues its retry in one
transaction (any trial, owned or not: a stale one, an interrupted one).
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import json
import threading
from typing import Any, Callable, Iterator, Sequence

from optuna.distributions import (BaseDistribution, check_distribution_compatibility, distribution_to_json,
                                  json_to_distribution)
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RDBStorage
# Optuna's own session helper and table models: the statements below write Optuna's schema (which
# is checked against this Optuna's at open, search.storage.backend), with fewer round trips.
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import exists, func, insert, literal, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from search.storage import retry


class OwnedTrialsStorage(RDBStorage):
    """``RDBStorage`` that serves ``get_trial`` for the running trials it created from a local copy."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._owned: dict[int, FrozenTrial] = {}
        # The trial this process finished last: ``study.tell`` reads it back once right after.
        self._just_finished: FrozenTrial | None = None
        self._owned_lock = threading.Lock()
        self._local = threading.local()
        # Set by search.storage.backend.open_storage for a database server (not SQLite).
        self.retry = retry.disabled()

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        for key in ("_owned", "_just_finished", "_owned_lock", "_local"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)
        self._owned, self._just_finished, self._owned_lock = {}, None, threading.Lock()
        self._local = threading.local()

    def owns(self, trial_id: int) -> bool:
        """Whether ``trial_id`` is a running trial this process created (read without a query)."""
        with self._owned_lock:
            return trial_id in self._owned

    @contextlib.contextmanager
    def counted_creation(self, lock_key: int, check: Callable[[Any], int]) -> Iterator[None]:
        """New trials (no template) created in this block, on this thread, on PostgreSQL, are
        created in one transaction that takes the advisory lock ``lock_key`` (transaction-scoped;
        it excludes the session-scoped lock of the same key), then the study's row (as Optuna's
        creation does), then calls ``check(connection)``. ``check`` raises to create nothing, or
        returns the number of trials in the study, which numbers the new one.

        The lock is held for four round trips, instead of a separate lock, count and unlock around
        Optuna's creation (eight); every worker waits on it once per trial.
        """
        self._local.counted = (lock_key, check)
        try:
            yield
        finally:
            self._local.counted = None

    def _create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> FrozenTrial:
        counted = getattr(self._local, "counted", None)
        if counted is not None and template_trial is None and self.engine.name == "postgresql":
            frozen = self._create_counted_retried(study_id, *counted)
        else:
            # (Optuna retries its own creation a few times; an ambiguous commit cannot be told apart.)
            frozen = super()._create_new_trial(study_id, template_trial)
        if frozen.state == TrialState.RUNNING:
            with self._owned_lock:
                self._owned[frozen._trial_id] = copy.deepcopy(frozen)
        return frozen

    def _create_counted_retried(self, study_id: int, lock_key: int, check: Callable[[Any], int]) -> FrozenTrial:
        """:meth:`_create_counted`, retried on a lost connection. A try whose commit may have gone
        through (the connection died before the reply) is looked up by its number and start time
        first, so a trial is never created (and counted) twice."""
        tried: list[tuple[int, datetime.datetime]] = []

        def attempt() -> FrozenTrial:
            if tried:
                found = self._find_created(study_id, *tried[-1])
                if found is not None:
                    return found
            return self._create_counted(study_id, lock_key, check, tried)

        return self.retry(attempt, "creating a trial")

    def _find_created(self, study_id: int, number: int, start: datetime.datetime) -> FrozenTrial | None:
        trial = models.TrialModel.__table__.c
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            trial_id = conn.execute(select(trial.trial_id).where(
                trial.study_id == study_id, trial.number == number,
                trial.datetime_start == _stored_time(start))).scalar()
        return None if trial_id is None else _new_frozen(number, start, trial_id)

    def _create_counted(self, study_id: int, lock_key: int, check: Callable[[Any], int],
                        tried: list[tuple[int, datetime.datetime]] | None = None) -> FrozenTrial:
        trial = models.TrialModel
        with self.engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key})
            # Every creator of a trial (enqueue, a requeue, a warm start) locks the study's row first.
            found = conn.execute(select(models.StudyModel.study_id).where(
                models.StudyModel.study_id == study_id).with_for_update()).first()
            if found is None:
                raise KeyError(f"no study with study_id {study_id}")
            # Optuna numbers a trial by the study's trials created before it; with the row locked,
            # that is every trial the study has.
            number = check(conn)
            start = datetime.datetime.now()
            if tried is not None:
                tried.append((number, start))  # the (study, number, start) of this try identifies its row
            trial_id = conn.execute(insert(trial).values(
                number=number, study_id=study_id, state=TrialState.RUNNING, datetime_start=_stored_time(start),
            ).returning(trial.trial_id)).scalar_one()
        return _new_frozen(number, start, trial_id)

    def fail_running(self, trial_id: int, user_attrs: dict[str, Any], retry: FrozenTrial | None) -> bool:
        """:meth:`_fail_running`, retried on a lost connection. A retry after a commit whose reply was
        lost finds the trial no longer RUNNING and returns False: the retry it queued stays the one."""
        return self.retry(lambda: self._fail_running(trial_id, user_attrs, retry), "failing a trial")

    def _fail_running(self, trial_id: int, user_attrs: dict[str, Any], retry: FrozenTrial | None) -> bool:
        """Set a RUNNING trial FAIL with ``user_attrs`` (its reason) and create ``retry`` (a WAITING
        template: its retry), all in one transaction. False, with nothing written, when the trial is
        no longer RUNNING (its worker finished it, or another worker failed it first).

        One transaction, because a trial seen FAIL before its retry exists looks like a used-up
        budget with nothing left running: a worker waiting for it then leaves, and the retry,
        queued a moment later, waits for a worker that never comes. And the state changes only
        where it still is RUNNING (compare and set): two workers failing the same stale trial at
        once queue one retry, not two (the one whose update finds it RUNNING).
        """
        trial = models.TrialModel
        try:
            with _create_scoped_session(self.scoped_session) as session:
                study_id = session.execute(select(trial.study_id).where(trial.trial_id == trial_id)).scalar()
                if study_id is None:
                    raise KeyError(f"no trial with trial_id {trial_id}")
                # The lock order of every trial creation (Optuna's, counted_creation): the study's row
                # first (PostgreSQL; SQLite takes its one write lock at the first write below).
                models.StudyModel.find_or_raise_by_id(study_id, session, for_update=True)
                try:
                    for key, value in user_attrs.items():
                        self._set_trial_attr_without_commit(session, models.TrialUserAttributeModel, trial_id,
                                                            key, value)
                except UpdateFinishedTrialError:
                    raise _NotRunning from None
                changed = session.execute(update(trial).where(
                    trial.trial_id == trial_id, trial.state == TrialState.RUNNING,
                ).values(state=TrialState.FAIL, datetime_complete=datetime.datetime.now())
                    .execution_options(synchronize_session=False)).rowcount
                if changed != 1:
                    raise _NotRunning
                if retry is not None:
                    # Optuna's own preparation of a trial from a template (params, attrs, number),
                    # in this transaction instead of one of its own.
                    self._get_prepared_new_trial(study_id, retry, session)
        except _NotRunning:
            return False
        self._forget(trial_id)  # a copy this process kept is stale now
        return True

    def get_trial(self, trial_id: int) -> FrozenTrial:
        with self._owned_lock:
            finished = self._just_finished
            if finished is not None and finished._trial_id == trial_id:
                self._just_finished = None
                return finished
            owned = self._owned.get(trial_id)
            if owned is not None:
                return copy.deepcopy(owned)
        return self.retry(lambda: RDBStorage.get_trial(self, trial_id), "reading a trial")

    def _set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float,
                         distribution: BaseDistribution, previous_distribution: BaseDistribution | None) -> None:
        with self._write(trial_id) as owned:
            if self._fast(owned) and previous_distribution is not None:
                # Optuna looks the param's earlier distribution up only when its cache has none.
                check_distribution_compatibility(previous_distribution, distribution)
                self.retry(lambda: self._insert_if_running(
                    trial_id, models.TrialParamModel, param_name=param_name, param_value=param_value_internal,
                    distribution_json=distribution_to_json(distribution)), "writing a param")
            else:
                self.retry(lambda: RDBStorage._set_trial_param(
                    self, trial_id, param_name, param_value_internal, distribution, previous_distribution),
                    "writing a param")
        if owned is not None:
            stored = json_to_distribution(distribution_to_json(distribution))  # as read back (tuples: lists)
            with self._owned_lock:
                owned.params[param_name] = stored.to_external_repr(param_value_internal)
                owned.distributions[param_name] = stored

    def start_trial(self, trial_id: int, user_attrs: dict[str, Any], heartbeat: bool) -> None:
        """A trial this process just created: its user attrs and first heartbeat, with no lookups
        (Optuna's heartbeat first looks for an existing row)."""
        with self._owned_lock:
            owned = self._owned.get(trial_id)
        if owned is None:
            raise KeyError(f"trial {trial_id} was not created by this process")
        if not self._fast(owned):
            for key, value in user_attrs.items():
                self.set_trial_user_attr(trial_id, key, value)
            if heartbeat:
                self.record_heartbeat(trial_id)
            return

        def write() -> None:
            for key, value in user_attrs.items():
                self._insert_if_running(trial_id, models.TrialUserAttributeModel, key=key,
                                        value_json=json.dumps(value))
            if heartbeat:
                self._insert_if_running(trial_id, models.TrialHeartbeatModel)

        with self._write(trial_id):
            self.retry(write, "starting a trial")
        with self._owned_lock:
            owned.user_attrs.update({key: _as_stored(value) for key, value in user_attrs.items()})

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        with self._write(trial_id) as owned:
            if self._fast(owned) and step not in owned.intermediate_values:  # type: ignore[union-attr]
                stored, kind = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(
                    intermediate_value)
                self.retry(lambda: self._insert_if_running(
                    trial_id, models.TrialIntermediateValueModel, step=step, intermediate_value=stored,
                    intermediate_value_type=kind), "reporting a value")
            else:
                self.retry(lambda: RDBStorage.set_trial_intermediate_value(self, trial_id, step, intermediate_value),
                           "reporting a value")
        if owned is not None:
            with self._owned_lock:
                owned.intermediate_values[step] = float(intermediate_value)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._set_attr(models.TrialUserAttributeModel, trial_id, key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._set_attr(models.TrialSystemAttributeModel, trial_id, key, value)

    def _set_attr(self, model: Any, trial_id: int, key: str, value: Any) -> None:
        def write_slow() -> None:
            with _create_scoped_session(self.scoped_session, True) as session:
                self._set_trial_attr_without_commit(session, model, trial_id, key, value)

        with self._write(trial_id) as owned:
            if self._fast(owned):
                self.retry(lambda: self._insert_if_running(trial_id, model, key=key, value_json=json.dumps(value)),
                           "writing an attr")
            else:
                self.retry(write_slow, "writing an attr")
        if owned is not None:
            attrs = owned.user_attrs if model is models.TrialUserAttributeModel else owned.system_attrs
            with self._owned_lock:
                attrs[key] = _as_stored(value)

    def _fast(self, owned: FrozenTrial | None) -> bool:
        """Whether a write to this trial can be one autocommit statement (an owned trial, PostgreSQL)."""
        return owned is not None and self.engine.name == "postgresql"

    def _insert_if_running(self, trial_id: int, model: Any, **columns: Any) -> None:
        """One row of ``model`` for the trial, inserted only while the trial is not finished: Optuna's
        "look the trial up, check its state, write" as one statement in autocommit (one round trip
        instead of four). A row of the same key (attr name, param name, step; the trial's one heartbeat)
        is replaced, as Optuna does: writing the same row twice (a retry of a write whose reply was
        lost with the connection) leaves one row."""
        trial, table = models.TrialModel, model.__table__
        columns = {"trial_id": trial_id, **columns}
        row = select(*(literal(v, type_=table.c[k].type) for k, v in columns.items())).where(
            exists().where(trial.trial_id == trial_id,
                           trial.state.in_((TrialState.RUNNING, TrialState.WAITING))))
        stmt = pg_insert(table).from_select(list(columns), row)
        keys = [c for c in ("key", "param_name", "step") if c in columns]
        updated = {c: stmt.excluded[c] for c in columns if c not in ("trial_id", *keys)}
        if model is models.TrialHeartbeatModel:
            updated = {"heartbeat": func.now()}
        if updated:
            stmt = stmt.on_conflict_do_update(index_elements=[table.c.trial_id, *(table.c[k] for k in keys)],
                                              set_=updated)
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            # (RETURNING: SQLAlchemy reports no row count for INSERT ... SELECT.)
            written = conn.execute(stmt.returning(table.c.trial_id)).first()
        if written is None:
            # What Optuna's check says (the trial is gone or finished: failed as stale elsewhere).
            raise UpdateFinishedTrialError(f"Trial#{trial_id} has already finished and can not be updated.")

    def set_trial_state_values(self, trial_id: int, state: TrialState,
                               values: Sequence[float] | None = None) -> bool:
        tries = 0

        def attempt() -> bool:
            nonlocal tries
            tries += 1
            try:
                return RDBStorage.set_trial_state_values(self, trial_id, state, values)
            except UpdateFinishedTrialError:
                # A try before this one may have been committed, its reply lost with the connection.
                if tries > 1 and state.is_finished() and self._stored_as(trial_id, state, values):
                    return True
                raise

        with self._write(trial_id) as owned:
            changed = self.retry(attempt, "finishing a trial")
        if owned is not None and changed and state.is_finished():
            # The stored datetime_complete is this process's clock a moment earlier (Optuna sets
            # it here, before the commit); the copy is read back once, by ``study.tell``.
            with self._owned_lock:
                owned.state = state
                owned.values = [float(v) for v in values] if values is not None else None
                owned.datetime_complete = datetime.datetime.now()
                self._owned.pop(trial_id, None)
                self._just_finished = owned
        return changed

    def _stored_as(self, trial_id: int, state: TrialState, values: Sequence[float] | None) -> bool:
        """Whether the stored trial holds exactly ``state`` and ``values`` (what this process wrote)."""
        stored = RDBStorage.get_trial(self, trial_id)
        written = None if values is None else [float(v) for v in values]
        return stored.state == state and stored.values == written

    def _write(self, trial_id: int) -> "_OwnedWrite":
        with self._owned_lock:
            return _OwnedWrite(self, trial_id, self._owned.get(trial_id))

    def _forget(self, trial_id: int) -> None:
        with self._owned_lock:
            self._owned.pop(trial_id, None)


class _NotRunning(Exception):
    """The trial :meth:`OwnedTrialsStorage.fail_running` was to fail is no longer running."""


class _OwnedWrite:
    """Context of one write to a trial: a refusal because it is finished drops the local copy."""

    def __init__(self, storage: OwnedTrialsStorage, trial_id: int, owned: FrozenTrial | None) -> None:
        self.storage, self.trial_id, self.owned = storage, trial_id, owned

    def __enter__(self) -> FrozenTrial | None:
        return self.owned

    def __exit__(self, kind: type[BaseException] | None, *rest: Any) -> bool:
        if kind is not None and issubclass(kind, UpdateFinishedTrialError):
            # Finished elsewhere (failed as stale by another worker): from now on read the database.
            self.storage._forget(self.trial_id)
        return False


# Optuna 5.0+ stores a trial's times as naive UTC (``TrialModel._datetime_start_utc``) and reads them
# back as local time; earlier releases store local time as it is.
_UTC_TIMES = hasattr(models.TrialModel, "_datetime_start_utc")


def _stored_time(local: datetime.datetime) -> datetime.datetime:
    """A naive local time as this Optuna's schema stores it."""
    return local.astimezone(datetime.timezone.utc).replace(tzinfo=None) if _UTC_TIMES else local


def _new_frozen(number: int, start: datetime.datetime, trial_id: int) -> FrozenTrial:
    return FrozenTrial(number=number, state=TrialState.RUNNING, value=None, values=None,
                       datetime_start=start, datetime_complete=None, params={}, distributions={},
                       user_attrs={}, system_attrs={}, intermediate_values={}, trial_id=trial_id)


def _retried(name: str, what: str) -> Callable[..., Any]:
    """``RDBStorage.<name>``, retried on a lost connection (a read, or a write Optuna makes an upsert)."""
    base = getattr(RDBStorage, name)

    def method(self: OwnedTrialsStorage, *args: Any, **kwargs: Any) -> Any:
        return self.retry(lambda: base(self, *args, **kwargs), what)

    method.__name__ = name
    method.__doc__ = base.__doc__
    return method


for _name, _what in (("get_study_id_from_name", "reading a study"), ("get_study_name_from_id", "reading a study"),
                     ("get_study_directions", "reading a study"), ("get_study_user_attrs", "reading a study"),
                     ("get_study_system_attrs", "reading a study"), ("get_all_studies", "reading the studies"),
                     ("set_study_user_attr", "writing a study attr"),
                     ("set_study_system_attr", "writing a study attr"),
                     ("get_trial_user_attrs", "reading a trial"), ("get_trial_system_attrs", "reading a trial"),
                     ("get_trial_param", "reading a trial"), ("get_best_trial", "reading the best trial"),
                     ("get_trial_id_from_study_id_trial_number", "reading a trial"),
                     ("_get_trials", "reading trials"), ("record_heartbeat", "recording a heartbeat"),
                     ("_get_stale_trial_ids", "looking for stale trials")):
    setattr(OwnedTrialsStorage, _name, _retried(_name, _what))


def _as_stored(value: Any) -> Any:
    """``value`` as reading it back from the database gives it (attrs are stored as JSON)."""
    return json.loads(json.dumps(value))
