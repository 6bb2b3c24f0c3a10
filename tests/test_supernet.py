"""The weight-sharing supernet: slices equal the static builder, training resumes exactly,
foreign or corrupt supernets are refused, and a search runs end to end with it."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch

from nas.data import load_dataset
from nas.evaluators import SupernetEvaluator
from nas.supernet import SupernetConfig, load_checkpoint, open_supernet, step_nets, train_supernet
from search_space import build, get_space
from search_space.errors import UserError
from search_space.supernet import Supernet, largest_point, parse_arch, smallest_point

optuna.logging.set_verbosity(optuna.logging.WARNING)
ROOT = Path(__file__).resolve().parents[1]

MNASNET_SPACE = {  # MnasNet-style SE (a ratio of the block input) and a searched NL
    "name": "mnas-se", "seed": "mnv3-small", "se_mode": "mnasnet", "search_nl": True,
    "stem": {"op": "conv", "out": 16, "kernel": 3, "nl": "relu", "stride": 2},
    "fixed": [{"op": "bneck", "out": 16, "kernel": 3, "exp": 16, "nl": "relu"}],
    "stages": [{"out": 24, "stride": 2, "layers": 2}, {"out": 40, "stride": 1, "layers": 2}],
    "last_conv": None, "head": [{"op": "pool"}],
    "kernels": [3, 5, 7], "expands": [1, 3, 6], "widths": [0.75, 1.0, 1.25], "known": [],
}


pytestmark = pytest.mark.usefixtures("one_thread")


def _perturb_bn(net: torch.nn.Module, seed: int = 0) -> None:
    """Random BN statistics and affine terms: equality must not hide behind identity BN."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.2)
    for m in net.modules():  # a classifier of meaningful scale, so a wrong slice shows
        if isinstance(m, torch.nn.Linear):
            m.weight.data.normal_(0, 0.5, generator=g)
    for name, p in net.named_parameters():  # kernel transforms away from identity (= plain crops)
        if ".transform_" in name:
            p.data.add_(torch.randn(p.shape, generator=g) * 0.3)


@pytest.mark.parametrize("space_name,sharing", [("small", "nested"), ("large-nl", "nested"), ("mnasnet", "nested"),
                                                ("small", "separate"), ("mnasnet", "separate"),
                                                ("small", "transform"), ("mnasnet", "transform")])
def test_extracted_subnet_is_the_static_build_with_the_slice(space_name, sharing, tmp_path):
    if space_name == "mnasnet":
        path = tmp_path / "mnas.json"
        path.write_text(json.dumps(MNASNET_SPACE))
        space = get_space(str(path))
    else:
        space = get_space(space_name)
    net = Supernet(space, in_channels=1, num_classes=10, resolution=32, kernel_sharing=sharing)
    _perturb_bn(net)
    net.eval()
    x = torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    rng = random.Random(0)
    points = [largest_point(net.space), smallest_point(net.space)] + [net.space.sample_params(rng) for _ in range(8)]
    for params in points:
        net.activate(params)
        with torch.no_grad():
            y = net(x)
        spec, model = net.extract()
        with torch.device("meta"):
            reference = build(spec).state_dict()
        assert spec == net.space.decode(params)
        assert list(model.state_dict()) == list(reference)  # same names, same order
        for k, v in model.state_dict().items():
            assert v.shape == reference[k].shape, k
        model.eval()
        with torch.no_grad():
            z = model(x)
        assert y.abs().max() > 1e-2  # outputs of meaningful scale
        torch.testing.assert_close(z, y, rtol=1e-5, atol=1e-5)


def test_subnets_share_weights():
    space = get_space("small")
    net = Supernet(space, 1, 10, 32)
    big = net.extract(largest_point(space))[1].state_dict()
    small_spec, small = net.extract(smallest_point(space))
    # the smallest net's first expand conv is the top-left corner of the largest net's
    w_small = small.state_dict()["features.1.block.0.0.weight"]
    w_big = big["features.1.block.0.0.weight"]
    assert torch.equal(w_small, w_big[: w_small.shape[0], : w_small.shape[1]])
    # its 3x3 depthwise kernel is the centre of the 5x5
    d_small = small.state_dict()["features.1.block.1.0.weight"]
    d_big = big["features.1.block.1.0.weight"]
    assert d_small.shape[-1] == 3 and d_big.shape[-1] == 5
    assert torch.equal(d_small, d_big[: d_small.shape[0], :, 1:4, 1:4])


def test_parse_arch_round_trip_and_errors():
    space = get_space("small-nl")
    rng = random.Random(3)
    for _ in range(10):
        p = space.sample_params(rng)
        assert space.code(parse_arch(space, space.code(p))) == space.code(p)
    for bad in ("1k3e3w100", "x_y_z_a_b", "1k9e3w100_1k3e3w100_1k3e3w100_1k3e3w100_1k3e3w100"):
        with pytest.raises(UserError):
            parse_arch(space, bad)


def test_sandwich_step_trains_largest_random_and_smallest():
    space = get_space("small")
    cfg = SupernetConfig(num_random=2)
    roles = [r for r, _ in step_nets(space, cfg, 5)]
    assert roles == ["largest", "random", "random", "smallest"]
    assert step_nets(space, cfg, 5) == step_nets(space, cfg, 5)  # a function of (seed, step)
    assert step_nets(space, cfg, 5) != step_nets(space, cfg, 6)
    warm = SupernetConfig(rule="uniform", num_random=3, warmup_largest=0.5, steps=100)
    assert all(p == largest_point(space) for _, p in step_nets(space, warm, 0))


def test_progressive_shrinking_opens_kernels_then_depths_then_the_rest():
    space = get_space("small")
    big = largest_point(space)
    cfg = SupernetConfig(rule="progressive", num_random=2, steps=400)

    def varied(step: int) -> set[str]:  # which kinds of choice differ from the largest net, over many steps
        return {k.rsplit("_", 1)[-1] for s in range(step, step + 40) for _, p in step_nets(space, cfg, s)
                for k, v in p.items() if v != big[k]}

    assert step_nets(space, cfg, 0) == [("largest", big)]
    assert varied(0) == set()
    assert varied(100) == {"kernel"}
    assert varied(200) == {"kernel", "layers"}
    assert varied(300) == {"kernel", "layers", "expand", "se", "width"}
    assert [r for r, _ in step_nets(space, cfg, 399)] == ["largest", "random", "random", "smallest"]
    assert step_nets(space, cfg, 399)[-1][1] == smallest_point(space)


# ---- training on the tiny space -------------------------------------------------------------------
def _tiny_cfg(tiny, **kw) -> SupernetConfig:
    base = dict(space=tiny["space"], steps=6, batch_size=32, resolution=16, val_size=100, eval_every=3,
                checkpoint_minutes=60.0)
    base.update(kw)
    return SupernetConfig(**base)


def _weights(folder: Path) -> dict:
    return load_checkpoint(folder)["model"]


@pytest.fixture(scope="module")
def tiny_supernet(tiny, tmp_path_factory):
    """A supernet of the tiny space trained for 6 steps without interruption."""
    out = tmp_path_factory.mktemp("supernet") / "sn"
    data = load_dataset(tiny["data"])
    outcome = train_supernet(_tiny_cfg(tiny), out, data, progress=False)
    assert outcome.steps == 6
    return out


def test_training_writes_checkpoint_curves_and_plot(tiny_supernet):
    meta = json.loads((tiny_supernet / "supernet.json").read_text())
    assert meta["step"] == 6 and meta["complete"] and meta["space"] == "tiny"
    curves = load_checkpoint(tiny_supernet)["curves"]
    assert [c["step"] for c in curves] == [3, 6]
    assert all(0.0 <= c["largest_val_acc"] <= 1.0 for c in curves)
    assert (tiny_supernet / "curves.png").stat().st_size > 1000


def test_stopped_run_resumes_to_the_same_weights(tiny, tiny_supernet, tmp_path):
    data = load_dataset(tiny["data"])
    out = tmp_path / "sn"
    first = train_supernet(_tiny_cfg(tiny), out, data, progress=False, stop_after=4)
    assert first.steps == 4 and load_checkpoint(out)["step"] == 4
    second = train_supernet(_tiny_cfg(tiny), out, data, progress=False)
    assert second.resumed_from == 4 and second.steps == 6
    a, b = _weights(tiny_supernet), _weights(out)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_with_other_settings_is_refused(tiny, tiny_supernet):
    data = load_dataset(tiny["data"])
    with pytest.raises(UserError, match="lr"):
        train_supernet(_tiny_cfg(tiny, lr=0.3), tiny_supernet, data, progress=False)


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_killed_cli_run_resumes_to_the_same_weights(tiny, tiny_supernet, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "nas.cli", "supernet", "train", "--space", tiny["space"], "--out", str(out),
           "--data", str(tiny["data"]), "--steps", "6", "--batch-size", "32", "--resolution", "16",
           "--val-size", "100", "--checkpoint-minutes", "0.00001", "--no-progress"]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    meta = out / "supernet.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # SIGKILL once a checkpoint part-way exists
        if meta.exists():
            try:
                if 1 <= json.loads(meta.read_text())["step"] < 6:
                    break
            except (json.JSONDecodeError, KeyError):
                pass
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = json.loads(meta.read_text())["step"]
    assert killed_at < 6, "the run finished before it could be killed"
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resuming supernet training in {out} at step" in done.stderr
    # eval_every differs from the fixture (curves only); the weights must not
    a, b = _weights(tiny_supernet), _weights(out)
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ---- opening a supernet ---------------------------------------------------------------------------
def test_foreign_or_corrupt_supernet_is_refused(tiny, tiny_supernet, tmp_path):
    data = load_dataset(tiny["data"])
    with pytest.raises(UserError, match="space 'tiny', not 'small'"):
        open_supernet(tiny_supernet, space="small")
    with pytest.raises(UserError, match="resolution 16, not 32"):
        open_supernet(tiny_supernet, resolution=32)
    other = load_dataset(None) if Path("/usr/share/datasets/fashion-mnist").is_dir() else None
    if other is not None:
        with pytest.raises(UserError, match="trained on data set"):
            open_supernet(tiny_supernet, data=other)
    net, meta = open_supernet(tiny_supernet, space=tiny["space"], data=data, resolution=16)
    assert meta["space"] == "tiny"
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "supernet.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(UserError, match="corrupt supernet checkpoint"):
        open_supernet(bad)
    proc = subprocess.run([sys.executable, "-m", "nas.cli", "supernet", "eval", str(bad), "1k3e3w100_1k3e3w100",
                           "--data", str(tiny["data"])], env=_env(), capture_output=True, text=True)
    assert proc.returncode == 2 and "corrupt supernet checkpoint" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_eval_cli_writes_a_subnet_that_builds(tiny, tiny_supernet, tmp_path):
    space = get_space(tiny["space"])
    arch = space.code({k: v[-1] for k, v in space.choices().items()})
    out = tmp_path / "subnet"
    proc = subprocess.run([sys.executable, "-m", "nas.cli", "supernet", "eval", str(tiny_supernet), arch,
                           "--data", str(tiny["data"]), "--val-images", "100", "--recalib-images", "64",
                           "--out", str(out), "--json"], env=_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["arch"] == arch and 0.0 <= result["val_accuracy"] <= 1.0
    from search_space import ArchSpec

    spec = ArchSpec.load(out / "spec.json")
    model = build(spec)
    model.load_state_dict(torch.load(out / "weights.pt"))  # an ordinary spec + state dict
    # the evaluator's score is reproducible: same images, same recalibration
    data = load_dataset(tiny["data"])
    ev = SupernetEvaluator.open(tiny_supernet, data, recalib_images=64, val_images=100)
    assert ev(space.with_task(10, 1, 16).decode(parse_arch(space, arch))).accuracy == result["val_accuracy"]
    bad = subprocess.run([sys.executable, "-m", "nas.cli", "supernet", "eval", str(tiny_supernet), "9k3e3w100",
                          "--data", str(tiny["data"])], env=_env(), capture_output=True, text=True)
    assert bad.returncode == 2 and "9k3e3w100" in bad.stderr


# ---- search with the supernet evaluator -----------------------------------------------------------
def test_search_with_supernet_evaluator_end_to_end(tiny, tiny_supernet, tmp_path):
    from latency.latency_fn import TableLatency
    from latency.table import LatencyTable
    from nas import study as st
    from nas.search import SearchConfig, run_search

    data = load_dataset(tiny["data"])
    table = TableLatency(LatencyTable.load(tiny["table"]))
    lat = lambda spec: table(spec.with_rows(spec.rows, resolution=32))  # noqa: E731  the table's geometry
    out = tmp_path / "search"
    cfg = SearchConfig(space=tiny["space"], controller="random", trials=6, out=out, target_ms=tiny["target"],
                       progress=False, plots=False, zoo_reference=(), evaluator="supernet",
                       supernet=str(tiny_supernet), recalib_images=64, val_images=100)
    outcome = run_search(cfg, data=data, latency_fn=lat)
    assert outcome.completed == 6 and outcome.failed == 0
    study = optuna.load_study(study_name="nas-search", storage=st.open_storage(st.parse_storage(None, out)))
    settings = study.user_attrs[st.SETTINGS_ATTR]
    assert settings["evaluator"]["evaluator"] == "supernet" and settings["evaluator"]["supernet_space"] == "tiny"
    assert settings["train_geometry"]["resolution"] == 16  # the supernet's, not the proxy default
    accs = [t.user_attrs["accuracy"] for t in study.trials]
    assert all(0.0 <= a <= 1.0 for a in accs)
    # the best net's inherited weights load into its spec
    from search_space import ArchSpec

    spec = ArchSpec.load(out / "best_train.json")
    build(spec).load_state_dict(torch.load(out / "best_weights.pt"))
    # a resume with a proxy evaluator, or another supernet, is refused
    with pytest.raises(UserError, match="evaluator"):
        run_search(SearchConfig(**{**cfg.__dict__, "evaluator": "proxy", "supernet": None, "trials": 7}),
                   data=data, latency_fn=lat)


def test_search_refuses_a_supernet_of_another_space_or_resolution(tiny, tiny_supernet, tmp_path):
    from nas.search import SearchConfig, run_search

    data = load_dataset(tiny["data"])
    base = dict(controller="random", trials=2, out=tmp_path / "s", target_ms=1.0, progress=False, plots=False,
                zoo_reference=(), evaluator="supernet", supernet=str(tiny_supernet))
    with pytest.raises(UserError, match="not 'small'"):
        run_search(SearchConfig(space="small", **base), data=data, latency_fn=lambda s: 1.0)
    with pytest.raises(UserError, match="resolution 16, not 32"):
        run_search(SearchConfig(space=tiny["space"], proxy={"resolution": 32}, **base), data=data,
                   latency_fn=lambda s: 1.0)
    with pytest.raises(UserError, match="needs --supernet"):
        run_search(SearchConfig(space=tiny["space"], **{**base, "supernet": None}), data=data,
                   latency_fn=lambda s: 1.0)


def test_pipeline_trains_a_supernet_on_first_use_and_searches_with_it(tiny, tmp_path):
    from nas.pipeline import Pipeline, PipelineConfig

    budget = dict(trials=3, proxy_resolution=16, short_steps=1, long_steps=1, init_steps=1, check_steps=2,
                  measure_rounds=1, calibrate_nets=0, latency_resolution=32, eval_batches=1, max_train_images=256,
                  val_size=100, progress=False)
    out = tmp_path / "pipe"
    logs: list[str] = []
    cfg = PipelineConfig(preset="small", out=out, space=tiny["space"], data=str(tiny["data"]), table=tiny["table"],
                         evaluator="supernet", supernet_steps=3, train_epochs=1, **budget)
    Pipeline(cfg, log=logs.append).run()
    state = json.loads((out / "pipeline.json").read_text())
    assert list(state["stages"]) == ["supernet", "search", "netadapt", "check", "train", "report"]
    assert 0.0 <= state["stages"]["train"]["test_acc_ema"] <= 1.0 and (out / "train" / "curves.png").exists()
    assert "| train |" in (out / "report.md").read_text()
    assert state["stages"]["supernet"]["trained"] and load_checkpoint(out / "supernet")["step"] == 3
    study_settings = json.loads((out / "search" / "summary.json").read_text()).get("settings", {})
    assert study_settings.get("evaluator", {}).get("evaluator") == "supernet"
    assert "weight-sharing supernet" in (out / "report.md").read_text()
    # NetAdapt started from the search's inherited weights
    assert (out / "search" / "best_weights.pt").exists()


def test_separate_kernels_do_not_share_depthwise_weights():
    space = get_space("small")
    net = Supernet(space, 1, 10, 32, kernel_sharing="separate")
    p3 = {**largest_point(space), "s1_kernel": 3}
    p5 = {**largest_point(space), "s1_kernel": 5}
    w3 = net.extract(p3)[1].state_dict()["features.1.block.1.0.weight"]
    w5 = net.extract(p5)[1].state_dict()["features.1.block.1.0.weight"]
    assert w3.shape[-1] == 3 and w5.shape[-1] == 5
    assert not torch.equal(w3, w5[:, :, 1:4, 1:4])
    with pytest.raises(UserError):
        Supernet(space, 1, 10, 32, kernel_sharing="bogus")


def test_kernel_transform_starts_as_the_crop_and_learns_apart_from_it():
    space = get_space("small")
    crop, tr = Supernet(space, 1, 10, 32), Supernet(space, 1, 10, 32, kernel_sharing="transform")
    tr.load_state_dict(crop.state_dict(), strict=False)
    p3 = {**largest_point(space), "s1_kernel": 3}
    key = "features.1.block.1.0.weight"
    # identity at first: the 3x3 is the centre of the 5x5, as with plain nesting
    torch.testing.assert_close(tr.extract(p3)[1].state_dict()[key], crop.extract(p3)[1].state_dict()[key])
    transforms = [n for n, _ in tr.named_parameters() if ".transform_" in n]
    assert transforms and all(n.endswith("transform_5to3") for n in transforms)
    # a gradient through the 3x3 reaches the matrix
    tr.activate(p3)
    tr(torch.randn(2, 1, 32, 32)).sum().backward()
    assert tr.features[1].block[1].transform_5to3.grad.abs().sum() > 0
    # not decayed toward zero by the trainer's optimizer (it would undo the identity start)
    from nas.supernet import SupernetConfig, _optimizer
    opt = _optimizer(tr, SupernetConfig(kernel_sharing="transform"))
    no_decay = {id(p) for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    assert id(tr.features[1].block[1].transform_5to3) in no_decay


def test_ctrl_c_saves_the_last_finished_step(tiny, tiny_supernet, tmp_path, monkeypatch):
    import nas.supernet as sn

    data = load_dataset(tiny["data"])
    out = tmp_path / "interrupted"
    real = sn.step_nets

    def interrupt_in_step_four(space, cfg, step):
        nets = real(space, cfg, step)
        if step != 3:
            return nets

        class FirstNetThenCtrlC(list):  # mid-step: one net's forward and backward ran (BN statistics moved)
            def __iter__(self):
                yield self[0]
                raise KeyboardInterrupt
        return FirstNetThenCtrlC(nets)

    monkeypatch.setattr(sn, "step_nets", interrupt_in_step_four)
    with pytest.raises(KeyboardInterrupt):
        train_supernet(_tiny_cfg(tiny), out, data, progress=False)
    assert load_checkpoint(out)["step"] == 3  # the checkpoint interval (60 min) never came
    monkeypatch.setattr(sn, "step_nets", real)
    train_supernet(_tiny_cfg(tiny), out, data, progress=False)
    a, b = _weights(tiny_supernet), _weights(out)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_exported_subnet_carries_the_inherited_weights(tiny, tiny_supernet, tmp_path):
    import numpy as np
    import onnxruntime as ort

    space = get_space(tiny["space"])
    arch = space.code({k: v[0] for k, v in space.choices().items()})
    sub = tmp_path / "sub"
    env = _env()
    r = subprocess.run([sys.executable, "-m", "nas.cli", "supernet", "eval", str(tiny_supernet), arch, "--data",
                        str(tiny["data"]), "--val-images", "100", "--recalib-images", "64", "--out", str(sub)],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    onnx = tmp_path / "sub.onnx"
    r = subprocess.run([sys.executable, "-m", "nas.cli", "export", str(sub / "spec.json"), "--onnx", str(onnx),
                        "--weights", str(sub / "weights.pt")], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    from search_space import ArchSpec

    spec = ArchSpec.load(sub / "spec.json")
    model = build(spec)
    model.load_state_dict(torch.load(sub / "weights.pt"))
    model.eval()
    x = torch.randn(1, spec.in_channels, spec.resolution, spec.resolution)  # exported at batch 1
    session = ort.InferenceSession(str(onnx))
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        want = model(x).numpy()
    assert np.allclose(got, want, atol=1e-4 * max(1.0, float(np.abs(want).max())))
    fresh = build(spec, seed=0).eval()
    with torch.no_grad():
        assert not np.allclose(fresh(x).numpy(), want, atol=1e-3)  # the weights are the subnet's, not an init


def test_search_cli_refuses_bad_evaluator_flags(tiny, tmp_path):
    r = subprocess.run([sys.executable, "-m", "nas.cli", "search", "--out", str(tmp_path / "s"), "--no-progress",
                        "--evaluator", "supernet"], env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "needs --supernet" in r.stderr, r.stderr[-1500:]
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    from nas.search import SearchConfig, run_search

    data = load_dataset(tiny["data"])
    for kw, msg in (({"supernet": str(tmp_path)}, "only used with --evaluator supernet"),
                    ({"evaluator": "supernet", "supernet": str(tmp_path / "none")}, "no supernet checkpoint")):
        with pytest.raises(UserError, match=msg):
            run_search(SearchConfig(space=tiny["space"], out=tmp_path / "s", progress=False, target_ms=1.0, **kw),
                       data=data, latency_fn=lambda s: 1.0)


def test_supernet_of_another_split_and_switched_pipeline_evaluator_are_refused(tiny, tiny_supernet, tmp_path):
    from nas.pipeline import Pipeline, PipelineConfig
    from nas.search import SearchConfig, run_search

    data = load_dataset(tiny["data"])
    with pytest.raises(UserError, match="val_size 100, not 50"):
        run_search(SearchConfig(space=tiny["space"], out=tmp_path / "s", progress=False, target_ms=1.0,
                                evaluator="supernet", supernet=str(tiny_supernet), proxy={"val_size": 50}),
                   data=data, latency_fn=lambda s: 1.0)
    base = dict(preset="small", out=tmp_path / "pipe", space=tiny["space"], data=str(tiny["data"]), progress=False)
    Pipeline(PipelineConfig(**base))._save_state()  # a proxy run, as older versions wrote it
    with pytest.raises(UserError, match="evaluator='proxy', not 'supernet'"):
        Pipeline(PipelineConfig(**base, evaluator="supernet"))


def test_finetuned_score_trains_the_inherited_weights_first(tiny, tiny_supernet):
    data = load_dataset(tiny["data"])
    space = get_space(tiny["space"]).with_task(10, 1, 16)
    spec = space.decode({k: v[0] for k, v in space.choices().items()})
    plain = SupernetEvaluator.open(tiny_supernet, data, recalib_images=64, val_images=100)(spec)
    tuned_ev = SupernetEvaluator.open(tiny_supernet, data, recalib_images=64, val_images=100, finetune_steps=3)
    tuned = tuned_ev(spec)
    assert 0.0 <= tuned.accuracy <= 1.0 and tuned_ev.settings()["finetune_steps"] == 3
    before = plain.model.state_dict()["features.1.block.0.0.weight"]
    after = tuned.model.state_dict()["features.1.block.0.0.weight"]
    assert not torch.equal(before, after)  # the weights moved
    with pytest.raises(UserError):
        SupernetEvaluator.open(tiny_supernet, data, finetune_steps=-1)


def test_device_selection():
    from nas.devices import resolve_device

    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("CPU") == "cpu"
    with pytest.raises(UserError, match="expected one of auto, cpu, cuda"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_throughput_benchmark_scores_every_net_with_each_worker_count(tiny, tiny_supernet, tmp_path):
    from experiments.supernet_throughput import main as throughput

    out = tmp_path / "tp"
    assert throughput(["--supernet", str(tiny_supernet), "--data", str(tiny["data"]), "--nets", "4",
                       "--workers", "1,2", "--out", str(out)]) == 0
    rows = json.loads(Path(str(out) + ".json").read_text())["rows"]
    assert [r["workers"] for r in rows] == [1, 2] and all(r["nets"] == 4 for r in rows)
    assert all(r["nets_per_hour"] > 0 and len(r["per_net_s"]) == 4 for r in rows)
    assert Path(str(out) + ".png").stat().st_size > 1000
    assert throughput(["--supernet", str(tmp_path / "none")]) == 2
    assert throughput(["--supernet", str(tiny_supernet), "--workers", "two"]) == 2
