"""Optuna storage and study helpers for the search: open, create, check, lock, recover.

Storage (`open_storage`):
- none given: a journal file ``OUT/study.log`` (``JournalStorage(JournalFileBackend)``):
  survives a crash at any moment, and several processes on one machine may share it;
- ``sqlite:///PATH``, ``postgresql://...`` (psycopg 3), ``postgresql+psycopg://...``,
  ``mysql...``: Optuna's RDBStorage, with a heartbeat so that a worker killed on another
  machine has its running trial failed (and retried once) after `GRACE_S` seconds;
- a path ending in ``.log`` or ``journal:PATH``: a journal file there.
A database that cannot be reached is a `UserError` (one line, no password shown).

The trial budget is a number of COMPLETE trials in the study, shared by every worker. To
reach it exactly, a worker checks the budget and creates its next trial while holding the
study's *gate* (`Gate`): a PostgreSQL advisory lock for PostgreSQL, an flock on a file
next to the storage for journal files and SQLite. The objective releases the gate as soon as
its trial is marked with the worker's identity (`WORKER_ATTR`), so evaluations run in
parallel while creation is serialised.

Dead workers (`recover_dead_trials`): a trial left RUNNING by a process of this machine that
no longer exists (SIGKILL, power loss) is marked FAIL and its choices are queued once more,
so a resumed search loses nothing that completed and redoes what was cut off.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import random
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from search_space.errors import UserError

SETTINGS_ATTR = "nas:settings"
KNOWN_ATTR = "nas:known_points_enqueued"
WORKER_ATTR = "worker"
RETRY_ATTR = "retry_of"
MAX_RETRY = 1
HEARTBEAT_S = 10
GRACE_S = 60
CONNECT_TIMEOUT_S = 5
JOURNAL_NAME = "study.log"

RDB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql")


# ---- storage URLs ---------------------------------------------------------------------------
@dataclass(frozen=True)
class StorageRef:
    """Where a study lives: kind is 'journal' or 'rdb'."""

    kind: str
    url: str  # the RDB URL, or the journal file path
    shown: str  # for messages (password masked)

    @property
    def is_postgres(self) -> bool:
        return self.kind == "rdb" and self.url.split(":", 1)[0].split("+", 1)[0] in ("postgresql", "postgres")

    @property
    def is_sqlite(self) -> bool:
        return self.kind == "rdb" and self.url.startswith("sqlite")


def mask_url(url: str) -> str:
    """The URL with any password replaced by ***."""
    if "://" not in url or "@" not in url.split("://", 1)[1]:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    if ":" in creds:
        creds = creds.split(":", 1)[0] + ":***"
    return f"{scheme}://{creds}@{host}"


def parse_storage(storage: str | None, out: Path | None) -> StorageRef:
    """Resolve ``--storage`` (None: a journal file in the output folder)."""
    if storage is None or storage == "":
        if out is None:
            raise UserError("no --storage and no --out folder to keep the study in")
        path = Path(out) / JOURNAL_NAME
        return StorageRef("journal", str(path), str(path))
    text = str(storage)
    scheme = text.split("://", 1)[0].split("+", 1)[0].lower() if "://" in text else ""
    if scheme in RDB_SCHEMES:
        if scheme == "postgres":  # SQLAlchemy only knows the long name
            text = "postgresql" + text[len("postgres"):]
        return StorageRef("rdb", text, mask_url(text))
    if text.startswith("journal:"):
        path = text[len("journal:"):]
        path = path[2:] if path.startswith("//") else path
        return StorageRef("journal", path, path)
    if text.endswith(".log"):
        return StorageRef("journal", text, text)
    raise UserError(f"--storage {mask_url(text)!r}: expected postgresql://..., sqlite:///FILE, mysql://..., "
                    "or a journal FILE.log")


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return (text[0] if text else exc.__class__.__name__)[:200]


def open_storage(ref: StorageRef, *, heartbeat: bool = True, attempts: int = 6) -> BaseStorage:
    """An Optuna storage for `ref`; UserError if it cannot be opened or reached."""
    if ref.kind == "journal":
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        path = Path(ref.url)
        if not path.parent.exists():
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UserError(f"cannot create the folder for journal {path}: {exc.strerror}") from None
        if path.is_dir():
            raise UserError(f"journal storage {path} is a folder; give a file path")
        repair_journal(path)
        try:
            return JournalStorage(JournalFileBackend(str(path)))
        except OSError as exc:
            raise UserError(f"cannot open journal storage {path}: {exc.strerror or exc}") from None

    import sqlalchemy.exc as sa_exc
    from optuna.storages import RDBStorage

    engine_kwargs: dict[str, Any] = {}
    if ref.is_postgres:
        engine_kwargs = {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}, "pool_pre_ping": True}
    elif ref.url.startswith("mysql"):
        engine_kwargs = {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}, "pool_pre_ping": True}
    elif ref.is_sqlite:
        path = ref.url.split(":///", 1)[-1]
        if path and path != ":memory:" and not Path(path).parent.exists():
            raise UserError(f"--storage {ref.shown}: folder {Path(path).parent} does not exist")
        engine_kwargs = {"connect_args": {"timeout": 60}}
    hb: dict[str, Any] = {}
    if heartbeat:
        from optuna.storages import RetryHeartbeatStaleTrialCallback

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hb = {"heartbeat_interval": HEARTBEAT_S, "grace_period": GRACE_S,
                  "heartbeat_stale_trial_callback": RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)}
    rng = random.Random()
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return RDBStorage(ref.url, engine_kwargs=engine_kwargs, **hb)
        except (sa_exc.IntegrityError, sa_exc.ProgrammingError, sa_exc.InternalError) as exc:
            # several workers creating the tables of an empty database at once: one wins,
            # the others see "already exists" / unique violations; try again.
            if attempt == attempts - 1:
                raise UserError(f"--storage {ref.shown}: cannot create Optuna's tables: {_first_line(exc)}") from None
            time.sleep(0.2 + rng.random() * (0.5 * 2 ** attempt))
        except sa_exc.OperationalError as exc:
            raise UserError(f"--storage {ref.shown}: cannot connect: {_first_line(exc)}") from None
        except sa_exc.ArgumentError as exc:
            raise UserError(f"--storage {ref.shown}: not a valid database URL ({_first_line(exc)})") from None
        except sa_exc.NoSuchModuleError as exc:
            raise UserError(f"--storage {ref.shown}: no database driver for this URL ({_first_line(exc)})") from None
        except ModuleNotFoundError as exc:
            raise UserError(f"--storage {ref.shown}: database driver {exc.name!r} is not installed") from None
        except (ValueError, RuntimeError) as exc:  # optuna's own checks (e.g. schema version)
            raise UserError(f"--storage {ref.shown}: {_first_line(exc)}") from None
    raise AssertionError("unreachable")


def repair_journal(path: Path) -> None:
    """Drop a torn last line (a process killed in the middle of a write) from a journal.

    Holds Optuna's own journal lock meanwhile, so no live writer is mid-append."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) == b"\n":
            return
    from optuna.storages.journal import JournalFileSymlinkLock

    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        with open(path, "rb+") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(size - 1)
            if fh.read(1) == b"\n":
                return
            chunk, pos = 1 << 16, size
            while pos > 0:  # everything after the last newline is a partial record
                start = max(0, pos - chunk)
                fh.seek(start)
                i = fh.read(pos - start).rfind(b"\n")
                if i >= 0:
                    fh.truncate(start + i + 1)
                    return
                pos = start
            fh.truncate(0)
    finally:
        lock.release()


# ---- studies --------------------------------------------------------------------------------
def create_or_load_study(storage: BaseStorage, name: str, directions: list[str], sampler=None,
                         attempts: int = 6) -> optuna.Study:
    """``create_study(load_if_exists=True)``, retried on races between workers."""
    import sqlalchemy.exc as sa_exc

    rng = random.Random()
    for attempt in range(attempts):
        try:
            study = optuna.create_study(storage=storage, study_name=name, directions=directions,
                                        sampler=sampler, load_if_exists=True)
            break
        except (sa_exc.IntegrityError, sa_exc.ProgrammingError, sa_exc.InternalError,
                optuna.exceptions.DuplicatedStudyError, KeyError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 + rng.random() * (0.5 * 2 ** attempt))
    have = [d.name.lower() for d in study.directions]
    if have != [d.lower() for d in directions]:
        raise UserError(f"study {name!r} optimizes {', '.join(have)} but this search needs "
                        f"{', '.join(directions)} (a different --controller?); use another --study")
    return study


def check_settings(study: optuna.Study, settings: dict, *, ignore: Iterable[str] = ()) -> dict:
    """Store `settings` in a new study; in an existing one, require that they match.

    Returns the stored settings (for values a resume takes from the study, like a resolved
    target). Raises UserError naming the first setting that differs.
    """
    ignore = set(ignore)
    stored = study.user_attrs.get(SETTINGS_ATTR)
    if stored is None:
        study.set_user_attr(SETTINGS_ATTR, _jsonable(settings))
        return _jsonable(settings)
    mine = _jsonable(settings)
    for key in sorted(set(stored) | set(mine)):
        if key in ignore:
            continue
        a, b = stored.get(key), mine.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            for sub in sorted(set(a) | set(b)):
                if a.get(sub) != b.get(sub):
                    raise UserError(_mismatch(study, f"{key}.{sub}", a.get(sub), b.get(sub)))
        elif a != b:
            raise UserError(_mismatch(study, key, a, b))
    return stored


def _mismatch(study: optuna.Study, key: str, was: Any, now: Any) -> str:
    return (f"study {study.study_name!r} was started with {key} = {json.dumps(was)}, this run has "
            f"{json.dumps(now)}; repeat the original settings to resume, or use another --study/--out")


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def counts(study: optuna.Study) -> dict[TrialState, int]:
    out = {s: 0 for s in TrialState}
    for t in study.get_trials(deepcopy=False):
        out[t.state] += 1
    return out


# ---- worker identity and dead workers -------------------------------------------------------
def _proc_start(pid: int) -> str | None:
    """The process's start time (clock ticks since boot) from /proc, or None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError, OSError):
        return None
    try:
        return stat.rsplit(")", 1)[1].split()[19]
    except IndexError:
        return None


def worker_id() -> str:
    """host:pid:start: names this process uniquely, even after its pid is reused."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_proc_start(pid) or 0}"


def worker_alive(ident: str) -> bool | None:
    """True/False for a worker of this machine; None when it ran elsewhere (unknown)."""
    try:
        host, pid, start = ident.rsplit(":", 2)
        pid_i = int(pid)
    except ValueError:
        return None
    if host != socket.gethostname():
        return None
    now = _proc_start(pid_i)
    if now is None:
        return False
    return start == "0" or now == start


def recover_dead_trials(study: optuna.Study, *, unmarked_are_dead: bool = False) -> list[int]:
    """Fail RUNNING trials whose worker process (on this machine) is gone; queue them again.

    `unmarked_are_dead`: also fail RUNNING trials that carry no worker mark (only safe while
    holding the study's gate, since a live worker marks its trial before releasing it).
    Returns the numbers of the trials failed.
    """
    failed = []
    storage = study._storage
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        ident = t.user_attrs.get(WORKER_ATTR)
        dead = (worker_alive(ident) is False) if ident else unmarked_are_dead
        if not dead:
            continue
        try:
            storage.set_trial_user_attr(t._trial_id, "failed_because", "its worker process died")
            storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        except RuntimeError:  # someone else finished or failed it meanwhile
            continue
        failed.append(t.number)
        retry_trial(study, t)
    return failed


def retry_trial(study: optuna.Study, trial: FrozenTrial, max_retry: int = MAX_RETRY) -> bool:
    """Queue a cut-off trial's choices again (at most `max_retry` times per original trial).

    Only a trial whose net was decided (it carries a ``spec``) is queued: one cut off while
    its controller was still choosing has nothing to redo."""
    history = list(trial.user_attrs.get("retry_history", [])) + [trial.number]
    if len(history) > max_retry or not trial.params or "spec" not in trial.user_attrs:
        return False
    study.enqueue_trial(dict(trial.params), user_attrs={RETRY_ATTR: history[0], "retry_history": history},
                        skip_if_exists=False)
    return True


# ---- the gate -------------------------------------------------------------------------------
class Gate:
    """A lock around 'check the budget, create a trial', shared by all workers of a study.

    `exact` says whether it excludes every other worker (PostgreSQL advisory lock; flock on a
    local file). `release()` may be called more than once.
    """

    exact = False

    def acquire(self) -> None: ...

    def release(self) -> None: ...

    def close(self) -> None:
        self.release()

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


class FileGate(Gate):
    exact = True

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fh = None

    def acquire(self) -> None:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fh = open(self.path, "a+")
            fcntl.flock(fh, fcntl.LOCK_EX)
            self._fh = fh

    def release(self) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            fcntl.flock(fh, fcntl.LOCK_UN)
            fh.close()


class PgAdvisoryGate(Gate):
    """A session-level PostgreSQL advisory lock on its own connection (freed if we die)."""

    exact = True

    def __init__(self, storage, study_name: str) -> None:
        from sqlalchemy import create_engine

        url = storage.engine.url
        self._engine = create_engine(url, connect_args={"connect_timeout": CONNECT_TIMEOUT_S}, poolclass=_null_pool())
        digest = hashlib.sha1(f"mnv3-nas:{study_name}".encode()).digest()
        self.key = int.from_bytes(digest[:8], "big", signed=True)
        self._conn = None
        self._held = False

    def acquire(self) -> None:
        from sqlalchemy import text

        if self._conn is None:
            self._conn = self._engine.connect()
        if not self._held:
            self._conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": self.key})
            self._conn.commit()
            self._held = True

    def release(self) -> None:
        from sqlalchemy import text

        if self._held and self._conn is not None:
            self._held = False
            self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
            self._conn.commit()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.release()
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
        self._engine.dispose()


def _null_pool():
    from sqlalchemy.pool import NullPool

    return NullPool


class NoGate(Gate):
    """For storages without a shared lock (MySQL, a journal on a network file system):
    the budget may be overshot by up to one trial per extra worker."""

    exact = False


def make_gate(ref: StorageRef, storage: BaseStorage, study_name: str) -> Gate:
    if ref.kind == "journal":
        return FileGate(Path(ref.url + ".nas.lock"))
    if ref.is_sqlite:
        path = ref.url.split(":///", 1)[-1]
        if path and path != ":memory:":
            return FileGate(Path(path + ".nas.lock"))
        return NoGate()
    if ref.is_postgres:
        return PgAdvisoryGate(storage, study_name)
    return NoGate()


__all__ = [
    "GRACE_S", "HEARTBEAT_S", "JOURNAL_NAME", "SETTINGS_ATTR", "WORKER_ATTR", "Gate", "StorageRef",
    "check_settings", "counts", "create_or_load_study", "make_gate", "mask_url", "open_storage",
    "parse_storage", "recover_dead_trials", "repair_journal", "retry_trial", "worker_alive", "worker_id",
]
