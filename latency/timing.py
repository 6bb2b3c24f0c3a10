"""Timing for the package (onnxruntime or LiteRT): the measurement protocol around runner.py's timer.

There is one timing implementation, `runner.time_session` (runner.py must stay a single
file for remote devices, so it is imported from here, never the other way round).

Protocol (all of it goes into a table's metadata):
- one session per model: `threads` intra-op threads, inter-op 1, sequential execution, all
  graph optimizations; random inputs bound once (IOBinding) so a call costs ~5 us of Python;
- `warmup` untimed runs, then `runs` runs timed one by one with perf_counter_ns;
- with one thread the process is pinned to the idlest core (sched_setaffinity), and the
  measuring thread runs at real-time priority (SCHED_FIFO 1) where permitted (else nice
  -20): on a shared machine other processes otherwise preempt timed runs (see
  runner.raise_priority for what that did here);
- before each pass/round, wait (capped) until other processes use under `quiet_load` cores;
- several passes over all models, interleaved, and the table keeps the best pass; then
  more passes (up to `max_passes`) over just the items whose two best passes still differ
  by more than `settle` (1%): slowdowns on a shared machine come in bursts that can spoil
  a measurement, and the floor is found when two passes agree.

The statistic. Interference on these machines only ever slows a run down, so the fast end
of the distribution is what the model itself costs. Measured here on MobileNetV3 ops and
nets (experiments/latency_statistic.py, results in experiments/results/latency_statistic.json),
the minimum and the 10th percentile of 100 runs repeat between passes several times more
tightly than the median or the mean; the minimum (best of passes) is the default.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from search_space.errors import UserError

from .runner import (  # noqa: F401 - re-exported: the one timing implementation
    PRIORITIES,
    QUIET_CHECK_S,
    RUNTIMES,
    STAT_NAMES,
    RunnerError,
    LoadMeter,
    machine_info,
    make_session,
    other_load,
    pick_quiet_core,
    raise_priority,
    random_feeds,
    restore_priority,
    summarize,
    time_session,
    wait_quiet,
)

STATISTICS = {"min": "min_ms", "p10": "p10_ms", "median": "median_ms", "mean": "mean_ms"}
DEFAULT_STATISTIC = "min"
DEFAULT_ROUNDS = 100  # whole nets end to end: rounds of Protocol.net_runs runs each (see latency.e2e)


@dataclass(frozen=True)
class Protocol:
    """How every number in a table (and every end-to-end check of it) is measured."""

    threads: int = 1
    runs: int = 100
    warmup: int = 10
    passes: int = 3
    statistic: str = DEFAULT_STATISTIC
    pin: bool = True  # pin to one core when threads == 1
    quiet_load: float = 0.15  # wait until other processes use under this many cores ...
    quiet_wait: float = 10.0  # ... but at most this long (s) per pass; 0 = never wait
    priority: str = "realtime"  # measuring thread: SCHED_FIFO where permitted, else nice -20 ("nice", "none")
    settle: float = 0.01  # after `passes`, measure again what the two best passes disagree on by more ...
    max_passes: int = 0  # ... up to this many passes (0: 2 x passes); settle 0 = fixed passes
    net_runs: int = 5  # whole nets, end to end: timed runs per round (many short rounds, see latency.e2e)
    net_warmup: int = 1  # ... and untimed runs before them
    runtime: str = "onnxruntime"  # what times it: onnxruntime, or LiteRT (XNNPACK) with the `litert` extra

    def __post_init__(self) -> None:
        for name in ("threads", "runs", "passes", "net_runs"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise UserError(f"--{name.replace('_', '-')} {v!r}: must be a positive integer")
        for name in ("warmup", "net_warmup"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise UserError(f"--{name.replace('_', '-')} {v!r}: must be a non-negative integer")
        if self.statistic not in STATISTICS:
            raise UserError(f"--statistic {self.statistic!r}: expected one of {', '.join(STATISTICS)}")
        if isinstance(self.priority, bool):  # older tables stored a flag
            object.__setattr__(self, "priority", "realtime" if self.priority else "none")
        if self.priority not in PRIORITIES:
            raise UserError(f"--priority {self.priority!r}: expected one of {', '.join(PRIORITIES)}")
        if self.quiet_wait < 0:
            raise UserError(f"--quiet-wait {self.quiet_wait!r}: must be >= 0")
        if not (0 <= self.settle < 1):
            raise UserError(f"--settle {self.settle!r}: must be in [0, 1)")
        if self.runtime not in RUNTIMES:
            raise UserError(f"--runtime {self.runtime!r}: expected one of {', '.join(RUNTIMES)}")
        if not isinstance(self.max_passes, int) or self.max_passes < 0:
            raise UserError(f"--max-passes {self.max_passes!r}: must be a non-negative integer")

    @property
    def pass_cap(self) -> int:
        """Most passes (rounds) one item gets: `passes`, plus settling passes."""
        if self.settle <= 0:
            return self.passes
        return max(self.passes, self.max_passes or 2 * self.passes)

    def unsettled(self, values) -> bool:
        """True if the two best of `values` (one per pass) still differ by more than `settle`."""
        if self.settle <= 0 or len(values) < 2:
            return False
        a, b = sorted(values)[:2]
        return b > a * (1 + self.settle)

    def wants_more(self, values) -> bool:
        """Does an item measured `values` (one per pass) need another pass?"""
        n = len(values)
        return n < self.passes or (n < self.pass_cap and self.unsettled(values))

    def for_nets(self) -> "Protocol":
        """The protocol of one end-to-end round of a whole net (its runs and warm-up)."""
        return replace(self, runs=self.net_runs, warmup=self.net_warmup)

    @property
    def column(self) -> str:
        return STATISTICS[self.statistic]

    def to_meta(self) -> dict:
        return asdict(self)


@contextlib.contextmanager
def measuring(protocol: "Protocol"):
    """While inside: pinned to one core (threads == 1) and at raised priority, per protocol.
    Yields what is in effect: {"core": int | None, "priority": "realtime" | "nice" | "none"}."""
    mode = protocol.priority
    if protocol.threads > 1 and mode == "realtime":
        mode = "nice"  # real-time pool threads on every core would starve the machine
    with pinned(protocol.pin and protocol.threads == 1) as core:
        done, token = raise_priority(mode)
        try:
            yield {"core": core, "priority": done}
        finally:
            restore_priority(token)


@contextlib.contextmanager
def pinned(enabled: bool = True):
    """Pin the process to the idlest allowed core while inside; restore the affinity after."""
    if not enabled or not hasattr(os, "sched_getaffinity"):
        yield None
        return
    before = os.sched_getaffinity(0)
    core = pick_quiet_core() if len(before) > 1 else next(iter(before))
    try:
        if core is not None:
            os.sched_setaffinity(0, {core})
        yield core
    finally:
        try:
            os.sched_setaffinity(0, before)
        except OSError:
            pass


class Timer:
    """Sessions by name (LRU-capped) and one call to time any of them under a protocol."""

    def __init__(self, protocol: Protocol, max_sessions: int = 256, seed: int = 0) -> None:
        self.protocol = protocol
        self.max_sessions = max_sessions
        self.seed = seed
        self._models: dict[str, tuple[object, dict | None, str | None]] = {}
        self._sessions: OrderedDict[str, tuple[object, dict]] = OrderedDict()

    def add(self, name: str, model: bytes | str | Path, shapes: dict | None = None, runtime: str | None = None) -> None:
        """Register a model (path or serialized bytes) under `name`; its session is made lazily,
        with the protocol's runtime unless `runtime` names another (to time both side by side)."""
        self._models[name] = (str(model) if isinstance(model, Path) else model, shapes, runtime)

    def __contains__(self, name: str) -> bool:
        return name in self._models

    def _session(self, name: str):
        if name in self._sessions:
            self._sessions.move_to_end(name)
            return self._sessions[name]
        model, shapes, runtime = self._models[name]
        try:
            sess = make_session(model, self.protocol.threads, runtime or self.protocol.runtime)
        except RunnerError as exc:  # e.g. the runtime is not installed: one line, exit 2
            raise UserError(str(exc)) from None
        entry = (sess, random_feeds(sess, self.seed, shapes))
        self._sessions[name] = entry
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)
        return entry

    def measure(self, name: str) -> dict:
        """Time one model once (warm-up + runs): stats in ms, plus `other_load` during it."""
        sess, feeds = self._session(name)
        meter = LoadMeter()
        stats = time_session(sess, feeds, self.protocol.runs, self.protocol.warmup)
        stats["other_load"] = meter.read()
        stats["value_ms"] = stats[self.protocol.column]
        return stats

    def wait_quiet(self) -> float:
        if self.protocol.quiet_wait <= 0:
            return float("nan")
        return wait_quiet(self.protocol.quiet_load, self.protocol.quiet_wait)

    def drop(self, name: str) -> None:
        self._sessions.pop(name, None)
        self._models.pop(name, None)


def now_iso() -> str:
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def monotonic() -> float:
    return time.monotonic()
