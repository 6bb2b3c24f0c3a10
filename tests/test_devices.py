"""Device selection, mixed precision and the GPU paths (the latter skip where torch sees no GPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nas.devices import autocast

ROOT = Path(__file__).resolve().parents[1]
GPU = torch.cuda.is_available()
needs_gpu = pytest.mark.skipif(not GPU, reason="torch sees no CUDA GPU on this machine")


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_cpu_runs_in_full_precision():
    conv = torch.nn.Conv2d(3, 4, 3)
    with autocast("cpu"):
        assert conv(torch.randn(1, 3, 8, 8)).dtype == torch.float32
    if not GPU:  # a GPU name where there is none changes nothing either (resolve_device refuses it first)
        with autocast("cuda"):
            assert conv(torch.randn(1, 3, 8, 8)).dtype == torch.float32


@pytest.mark.parametrize("cmd", [
    ["check", "mnv3-small", "--against", "mnv3-small", "--no-latency", "--device", "tpu"],
    ["train", "mnv3-small", "--out", "unused", "--device", "gpu0"],
    ["supernet", "train", "--out", "unused", "--device", "npu"],
    ["pipeline", "--preset", "small", "--out", "unused", "--device", "tpu"],
])
def test_unknown_device_is_one_line_exit_2(cmd, tmp_path):
    r = subprocess.run([sys.executable, "-m", "nas.cli", *cmd], cwd=tmp_path, env=_env(), capture_output=True,
                       text=True)
    assert r.returncode == 2 and "expected one of auto, cpu, cuda" in r.stderr and "Traceback" not in r.stderr, \
        r.stderr[-1500:]


@pytest.mark.skipif(GPU, reason="checks the refusal on a machine without a GPU")
def test_netadapt_refuses_cuda_without_a_gpu(tmp_path):
    r = subprocess.run([sys.executable, "-m", "nas.cli", "netadapt", "mnv3-small", "--out", str(tmp_path / "o"),
                        "--target-frac", "0.9", "--table", str(tmp_path / "t.parquet"), "--device", "cuda"], cwd=tmp_path, env=_env(),
                       capture_output=True, text=True)
    assert r.returncode == 2 and "no CUDA GPU" in r.stderr and "Traceback" not in r.stderr, r.stderr[-1500:]


@needs_gpu
def test_bf16_autocast_on_a_gpu():
    conv = torch.nn.Conv2d(3, 4, 3).cuda()
    with autocast("cuda"):
        out = conv(torch.randn(1, 3, 8, 8, device="cuda"))
    assert out.dtype == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32)


@needs_gpu
def test_gpu_proxy_trial_supernet_steps_and_a_training_epoch(tiny, tmp_path):
    from nas.data import load_dataset
    from nas.proxy import ProxyConfig, train_proxy
    from nas.supernet import SupernetConfig, train_supernet
    from nas.train import TrainConfig, train_net
    from search_space import build, zoo
    from netadapt.loop import training_spec

    data = load_dataset(tiny["data"])
    spec = training_spec(zoo("mnv3-small"), data, 16)
    res = train_proxy(build(spec), data, ProxyConfig(steps=20, resolution=16, val_size=100, device="cuda"))
    assert 0 <= res.val_accuracy <= 1
    out = train_supernet(SupernetConfig(space=tiny["space"], steps=3, batch_size=32, resolution=16, val_size=100,
                                        device="cuda"), tmp_path / "sn", data, progress=False)
    assert out.steps == 3
    r = train_net(zoo("mnv3-small"), data, tmp_path / "t", TrainConfig(epochs=1, batch_size=64, resolution=16,
                                                                      val_size=100, device="cuda"), progress=False)
    assert 0 <= r["test_acc_ema"] <= 1
