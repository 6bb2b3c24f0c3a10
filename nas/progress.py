"""One rich progress bar (on stderr) for long loops: done of total, named text fields, elapsed, ETA."""

from __future__ import annotations

import sys


class Bar:
    """``with Bar(enabled, total, done, label, fields=("loss",)) as bar: bar.update(n, loss="0.31")``;
    disabled, it prints nothing but `log` lines."""

    def __init__(self, enabled: bool, total: int, done: int, label: str, fields: tuple[str, ...] = ()) -> None:
        self.enabled, self.total, self.done, self.label, self.fields = enabled, total, done, label, fields
        self._p = None
        self._task = None

    def __enter__(self):
        if self.enabled:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
            columns += [TextColumn(f"{name.replace('_', ' ')} {{task.fields[{name}]}}") for name in self.fields]
            columns += [TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn()]
            self._p = Progress(*columns, console=Console(stderr=True))
            self._p.__enter__()
            self._task = self._p.add_task(self.label, total=self.total, completed=self.done,
                                          **{name: "-" for name in self.fields})
        return self

    def update(self, done: int, **fields: str) -> None:
        if self._p is not None:
            self._p.update(self._task, completed=min(done, self.total), **fields)

    def log(self, text: str) -> None:
        if self._p is not None:
            self._p.console.print(text, highlight=False, markup=False)
        else:
            print(text, file=sys.stderr)

    def __exit__(self, *exc):
        if self._p is not None:
            self._p.__exit__(*exc)
