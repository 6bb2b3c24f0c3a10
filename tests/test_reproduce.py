"""`nas reproduce`, `nas show` and `nas export` end to end."""

import subprocess
import sys

import numpy as np
import onnxruntime as ort
import torch

import search_space as ss
from latency.export import set_bn_statistics
from search_space.published import FIGURES, reproduce


def run(*args):
    return subprocess.run([sys.executable, "-m", "nas.cli", *args], capture_output=True, text=True)


def test_reproduce_passes():
    proc = run("reproduce")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 outside tolerance" in proc.stdout
    assert all(c.ok for c in reproduce() if c.figure.checked)
    # every zoo net has a checked params figure and, but for Small-minimal (whose only
    # published MAdds belong to the pre-revision Small), a checked MAdds figure
    for name in ss.ZOO_NAMES:
        metrics = {f.metric for f in FIGURES if f.net == name and f.checked}
        assert metrics == ({"params"} if name == "mnv3-small-minimal" else {"params", "madds"}), name


def test_tolerance_would_catch_a_wrong_count():
    fig = next(f for f in FIGURES if f.net == "mnv3-large" and f.metric == "params")
    from search_space.published import Check
    assert not Check(fig, fig.value + 1).ok


def test_show_prints_table():
    proc = run("show", "mnv3-large")
    assert proc.returncode == 0
    assert "5,483,032 params" in proc.stdout and "bneck, 5x5" in proc.stdout


def test_export_matches_torch(tmp_path):
    out = tmp_path / "small.onnx"
    proc = run("export", "mnv3-small", "--onnx", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "of the output's scale" in proc.stdout
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    model = ss.build(ss.zoo("mnv3-small"), seed=0)
    set_bn_statistics(model, torch.randn(8, 3, 224, 224, generator=torch.Generator().manual_seed(1)))
    x = torch.randn(1, 3, 224, 224)
    (got,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        ref = model(x).numpy()
    assert np.abs(ref).max() > 1e-3  # outputs of working scale, where a wrong export shows
    assert np.abs(got - ref).max() < 1e-4 * np.abs(ref).max()
