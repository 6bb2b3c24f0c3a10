"""`nas train`: the recipe runs, resumes to the same weights, starts from given weights, refuses bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nas.data import load_dataset
from nas.train import TrainConfig, lr_at, train_net
from search_space import build, zoo
from search_space.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(**kw) -> TrainConfig:
    base = dict(epochs=2, batch_size=64, resolution=16, val_size=100, checkpoint_minutes=60.0)
    base.update(kw)
    return TrainConfig(**base)


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_schedule_warms_up_then_decays():
    cfg = _cfg(epochs=10)
    lrs = [lr_at(cfg, s, 10) for s in range(100)]
    assert lrs[0] < lrs[9] <= cfg.peak_lr == pytest.approx(0.1 * 64 / 4096)
    assert lrs[10] > lrs[50] > lrs[99] >= 0


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "run"
    data = load_dataset(tiny["data"])
    result = train_net(zoo("mnv3-small"), data, out, _cfg(), progress=False)
    return out, result


def test_run_writes_curves_checkpoints_and_scores_test_once(trained):
    out, result = trained
    assert 0.0 <= result["test_acc_ema"] <= 1.0 and result["best_epoch"] in (1, 2)
    rows = (out / "curves.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith("epoch,step,train_loss,val_acc_ema")
    for f in ("best.pt", "last.pt", "weights.pt", "spec.json", "curves.png", "result.json"):
        assert (out / f).exists(), f
    from search_space import ArchSpec

    spec = ArchSpec.load(out / "spec.json")
    assert spec.resolution == 16 and spec.in_channels == 1 and spec.num_classes == 10
    build(spec).load_state_dict(torch.load(out / "weights.pt"))


def test_stopped_run_resumes_to_the_same_weights(tiny, trained, tmp_path):
    data = load_dataset(tiny["data"])
    out = tmp_path / "run"
    stopped = train_net(zoo("mnv3-small"), data, out, _cfg(), progress=False, stop_after=5)
    assert stopped["stopped"] == 5 and stopped["images_per_second"] > 0
    logs = []
    result = train_net(zoo("mnv3-small"), data, out, _cfg(), progress=False, log=logs.append)
    assert any("resuming training" in line and "at step 5" in line for line in logs)
    a = torch.load(trained[0] / "last.pt", weights_only=True)
    b = torch.load(out / "last.pt", weights_only=True)
    for part in ("model", "ema"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    assert result["test_acc_ema"] == trained[1]["test_acc_ema"]
    with pytest.raises(UserError, match="label_smoothing"):
        train_net(zoo("mnv3-small"), data, out, _cfg(label_smoothing=0.2), progress=False)


def test_starts_from_given_weights(tiny, trained, tmp_path):
    data = load_dataset(tiny["data"])
    spec_weights = torch.load(trained[0] / "weights.pt")
    out = tmp_path / "warm"
    train_net(zoo("mnv3-small"), data, out, _cfg(epochs=1), weights=spec_weights, progress=False, stop_after=1)
    first = torch.load(out / "last.pt", weights_only=True)["model"]["classifier.3.weight"]
    # one small step away from the given weights, not from a fresh initialisation
    assert (first - spec_weights["classifier.3.weight"]).abs().max() < 0.1
    bad = {k: v for k, v in spec_weights.items() if not k.startswith("classifier")}
    with pytest.raises(UserError, match="does not fit"):
        train_net(zoo("mnv3-small"), data, tmp_path / "bad", _cfg(epochs=1), weights=bad, progress=False)


@pytest.mark.parametrize("args,msg", [
    (["--device", "tpu"], "expected one of auto, cpu, cuda"),
    (["--data", "/no/such/folder"], "does not exist"),
    (["--epochs", "0"], "must be at least 1"),
    (["--batch-size", "63", "--accumulate", "2", "--val-size", "100"], "--batch-size 63: must be a multiple of 1 process(es) x 2"),
    (["--accumulate", "0"], "--accumulate 0: must be at least 1"),
])
def test_bad_input_is_one_line_exit_2(tiny, tmp_path, args, msg):
    argv = ["mnv3-small", "--out", str(tmp_path / "o"), "--data", str(tiny["data"]), *args]
    r = subprocess.run([sys.executable, "-m", "nas.cli", "train", *argv], env=_env(), capture_output=True, text=True)
    assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr, r.stderr[-1500:]


def test_corrupt_checkpoint_is_refused(tiny, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "last.pt").write_bytes(b"garbage")
    r = subprocess.run([sys.executable, "-m", "nas.cli", "train", "mnv3-small", "--out", str(out), "--data",
                        str(tiny["data"]), "--resolution", "16", "--val-size", "100"], env=_env(),
                       capture_output=True, text=True)
    assert r.returncode == 2 and "corrupt or foreign training checkpoint" in r.stderr, r.stderr[-1500:]
    if not torch.cuda.is_available():
        r = subprocess.run([sys.executable, "-m", "nas.cli", "train", "mnv3-small", "--out", str(tmp_path / "c"),
                            "--device", "cuda"], env=_env(), capture_output=True, text=True)
        assert r.returncode == 2 and "no CUDA GPU" in r.stderr
