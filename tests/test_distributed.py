"""Data-parallel training under torchrun (2 processes, gloo on this CPU).

The global batch is split between the processes, so a 2-process run computes what one process
computes with ``--accumulate 2`` (two micro-batches a step, each with its own BatchNorm
statistics): the tests ask for the same weights, not merely similar ones.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nas.data import load_dataset
from nas.supernet import SupernetConfig, train_supernet
from nas.train import TrainConfig, train_net
from search_space import zoo

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")

TRAIN = ["--epochs", "3", "--batch-size", "64", "--resolution", "16", "--val-size", "100", "--lr", "0.02",
         "--no-progress"]
SUPERNET = ["--steps", "6", "--batch-size", "64", "--resolution", "16", "--val-size", "100", "--no-progress"]


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _torchrun(args: list[str], **kw):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "nas.cli", *args]
    return subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **kw)


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (torchrun's workers run in sessions of their own)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _finish(proc) -> str:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    return out + err


def _max_diff(a: dict, b: dict) -> float:
    keys = [k for k in a if a[k].is_floating_point() and "running" not in k]
    assert keys and set(keys) <= set(b)
    return max(float((a[k] - b[k]).abs().max()) for k in keys)


def _train_cfg(**kw) -> TrainConfig:
    return TrainConfig(**{**dict(epochs=3, batch_size=64, resolution=16, val_size=100, lr=0.02), **kw})


@pytest.fixture(scope="module")
def two_process_train(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "train"
    text = _finish(_torchrun(["train", "mnv3-small", "--data", str(tiny["data"]), "--out", str(out), *TRAIN]))
    return out, text


def test_two_processes_train_what_one_process_accumulating_two_micro_batches_trains(tiny, two_process_train,
                                                                                   tmp_path):
    out, text = two_process_train
    assert "test accuracy" in text and text.count("test accuracy") == 1  # one process reports and writes
    assert json.loads((out / "result.json").read_text())["steps"] == 3 * (500 // 64)
    two = torch.load(out / "last.pt", weights_only=True)
    data = load_dataset(tiny["data"])
    train_net(zoo("mnv3-small"), data, tmp_path / "acc2", _train_cfg(accumulate=2), progress=False)
    train_net(zoo("mnv3-small"), data, tmp_path / "one", _train_cfg(), progress=False)
    acc2 = torch.load(tmp_path / "acc2" / "last.pt", weights_only=True)
    one = torch.load(tmp_path / "one" / "last.pt", weights_only=True)
    assert two["step"] == acc2["step"] == one["step"]
    assert _max_diff(two["model"], acc2["model"]) < 1e-6
    # the comparison can fail: BatchNorm over the whole batch of 64 trains other weights
    assert _max_diff(two["model"], one["model"]) > 1e-4


def test_killed_two_process_run_resumes_to_the_same_weights(tiny, two_process_train, tmp_path):
    out = tmp_path / "killed"
    args = ["train", "mnv3-small", "--data", str(tiny["data"]), "--out", str(out), *TRAIN,
            "--checkpoint-minutes", "0"]  # last.pt after every step: the kill lands anywhere
    proc = _torchrun(args)
    deadline = time.monotonic() + 240
    while not (out / "last.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    for pid in _children(proc.pid) + [proc.pid]:  # both workers, then torchrun, without warning
        os.kill(pid, signal.SIGKILL)
    proc.communicate()
    text = _finish(_torchrun(args))
    resumed = re.search(r"resuming training in .* at step (\d+) of (\d+)", text)
    assert resumed and 0 < int(resumed.group(1)) < int(resumed.group(2)), text[-2000:]
    a = torch.load(two_process_train[0] / "last.pt", weights_only=True)
    b = torch.load(out / "last.pt", weights_only=True)
    for part in ("model", "ema"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)


def test_two_process_supernet_equals_one_process_accumulating(tiny, tmp_path):
    out = tmp_path / "sn2"
    text = _finish(_torchrun(["supernet", "train", "--space", tiny["space"], "--data", str(tiny["data"]),
                              "--out", str(out), *SUPERNET]))
    assert text.count("held-out accuracy largest") == 1
    two = torch.load(out / "supernet.pt", weights_only=True)
    data = load_dataset(tiny["data"])
    base = SupernetConfig(space=tiny["space"], steps=6, batch_size=64, resolution=16, val_size=100)
    train_supernet(dataclasses.replace(base, accumulate=2), tmp_path / "acc2", data, progress=False)
    train_supernet(base, tmp_path / "one", data, progress=False)
    acc2 = torch.load(tmp_path / "acc2" / "supernet.pt", weights_only=True)
    one = torch.load(tmp_path / "one" / "supernet.pt", weights_only=True)
    assert two["step"] == acc2["step"] == 6
    assert _max_diff(two["model"], acc2["model"]) < 1e-6
    assert _max_diff(two["model"], one["model"]) > 1e-5


def test_batch_must_split_evenly(tiny, tmp_path):
    from search_space.errors import UserError

    with pytest.raises(UserError, match="--batch-size 63: must be a multiple of 1 process"):
        train_net(zoo("mnv3-small"), load_dataset(tiny["data"]), tmp_path / "x",
                  _train_cfg(accumulate=2, batch_size=63), progress=False)
