"""Shared fixtures: a tiny but real search set-up (data folder, space, measured latency table)."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest

FASHION = Path("/usr/share/datasets/fashion-mnist")

TINY_SPACE = {
    "name": "tiny", "seed": "mnv3-small",
    "stem": {"op": "conv", "out": 8, "kernel": 3, "nl": "hswish", "stride": 2},
    "stages": [{"out": 16, "stride": 2, "layers": 1, "nl": "relu"},
               {"out": 24, "stride": 2, "layers": 1, "nl": "hswish"}],
    "last_conv": 64, "head": [{"op": "pool"}, {"op": "fc", "out": 128, "nl": "hswish", "bn": False}],
    "kernels": [3, 5], "expands": [3, 6], "widths": [1.0, 1.5], "known": [],
}


def _idx(path: Path, array: np.ndarray) -> None:
    magic = 0x800 | array.ndim
    with gzip.open(path, "wb") as fh:
        fh.write(struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes())


def _fashion_subset(n_train: int, n_test: int):
    from nas.data import read_idx

    try:
        x = read_idx(FASHION / "train-images-idx3-ubyte.gz")[: n_train + n_test]
        y = read_idx(FASHION / "train-labels-idx1-ubyte.gz")[: n_train + n_test]
    except (FileNotFoundError, OSError):
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, size=(n_train + n_test, 28, 28), dtype=np.uint8)
        y = (np.arange(n_train + n_test) % 10).astype(np.uint8)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


@pytest.fixture
def one_thread():
    """One torch thread, as the project runs: two threads on a busy 2-core machine crawl."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A tiny data folder, the tiny space and a latency table for it (measured here)."""
    from latency.timing import Protocol
    from latency.latency_fn import TableLatency
    from latency.machine_table import ensure_table
    from search_space.spaces import get_space

    root = tmp_path_factory.mktemp("tiny")
    data = root / "data"
    data.mkdir()
    xtr, ytr, xte, yte = _fashion_subset(600, 100)
    _idx(data / "train-images-idx3-ubyte.gz", xtr)
    _idx(data / "train-labels-idx1-ubyte.gz", ytr)
    _idx(data / "t10k-images-idx3-ubyte.gz", xte)
    _idx(data / "t10k-labels-idx1-ubyte.gz", yte)
    space_file = root / "tiny_space.json"
    space_file.write_text(json.dumps(TINY_SPACE))
    space = get_space(str(space_file))
    table_path = root / "table.parquet"
    proto = Protocol(runs=5, warmup=1, passes=1, quiet_wait=0.0, pin=False)
    table = ensure_table(table_path, space, 32, progress=False, calibrate_nets=0, protocol=proto, log=lambda s: None)
    assert len(table) >= 10
    mid = space.decode({k: v[0] for k, v in space.choices().items()}, resolution=32)
    target = TableLatency(table)(mid)
    return {"root": root, "data": data, "space": str(space_file), "table": str(table_path), "target": target,
            "n_ops": len(table)}


