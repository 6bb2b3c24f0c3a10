"""NetAdapt's one contact with the latency package: predicted ms of a spec from a table.

The implementation is `latency.latency_fn.TableLatency`, shared with the search.
"""

from __future__ import annotations

from pathlib import Path

from latency.latency_fn import PredictFn, TableLatency

__all__ = ["PredictFn", "TableLatency", "predict_ms_from_table"]


def predict_ms_from_table(path: str | Path, **kwargs) -> TableLatency:
    """A `predict_ms(spec) -> float` for NetAdapt, backed by the table at `path`."""
    return TableLatency(path, **kwargs)
