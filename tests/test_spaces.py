"""Search spaces: sampling through Optuna, decode/encode, size, latency ops, known points, CLI."""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random

import optuna
import pytest
import torch

from search_space import build, ops, zoo
from search_space.errors import UserError
from search_space.spaces import SPACES, SearchSpace, describe, get_space
from search_space.zoo import MNASNET_A1_STAGES

optuna.logging.set_verbosity(optuna.logging.WARNING)

FIELDS = ("layers", "kernel", "expand", "se", "width")


def _names(stages: int, nl: bool = False) -> list[str]:
    fields = FIELDS + (("nl",) if nl else ())
    return [f"s{i}_{f}" for i in range(1, stages + 1) for f in fields]


def test_flat_names_are_stable_and_complete():
    assert get_space("large").names() == _names(5)
    assert get_space("small").names() == _names(5)
    assert get_space("large-nl").names() == _names(5, nl=True)
    assert get_space("small-nl").names() == _names(5, nl=True)
    large = get_space("large").choices()
    assert large["s1_layers"] == [1, 2, 3] and large["s3_layers"] == [3, 4, 5]
    assert large["s2_kernel"] == [3, 5] and large["s2_expand"] == [3, 4, 6]
    assert large["s2_se"] == [0.0, 0.25] and large["s2_width"] == [0.75, 1.0, 1.25]
    assert get_space("small").choices()["s1_layers"] == [1, 2]  # n=1: n-1 clamps to 1


@pytest.mark.parametrize("name", ["large", "small", "large-nl"])
def test_suggest_through_optuna_builds_and_runs(name):
    space = get_space(name).with_task(num_classes=10, in_channels=1, resolution=32)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=1))
    trial = study.ask()
    spec = space.suggest(trial)
    assert list(trial.params) == space.names()  # every choice, in the fixed order
    assert (spec.resolution, spec.in_channels, spec.num_classes) == (32, 1, 10)
    model = build(spec, seed=0).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, 32, 32))
    assert out.shape == (2, 10)
    assert space.decode(trial.params).rows == spec.rows
    study.tell(trial, 0.5)


def test_decode_structure_large():
    space = get_space("large")
    params = {"s1_layers": 3, "s1_kernel": 5, "s1_expand": 4, "s1_se": 0.25, "s1_width": 1.25,
              "s2_layers": 2, "s2_kernel": 3, "s2_expand": 3, "s2_se": 0.0, "s2_width": 0.75,
              "s3_layers": 3, "s3_kernel": 3, "s3_expand": 6, "s3_se": 0.0, "s3_width": 1.0,
              "s4_layers": 1, "s4_kernel": 5, "s4_expand": 6, "s4_se": 0.25, "s4_width": 1.0,
              "s5_layers": 2, "s5_kernel": 5, "s5_expand": 6, "s5_se": 0.25, "s5_width": 1.25}
    spec = space.decode(params)
    rows = spec.rows
    assert rows[0].op == "conv" and rows[0].out == 16 and rows[0].nl == "hswish" and rows[0].stride == 2
    assert (rows[1].exp, rows[1].out, rows[1].nl) == (16, 16, "relu")
    s1 = rows[2:5]
    assert [r.stride for r in s1] == [2, 1, 1]  # only the first layer strided
    assert [r.exp for r in s1] == [64, 128, 128]  # 4x input: 16, then 32 (24 x1.25)
    assert all(r.out == 32 and r.kernel == 5 and r.se == 0.25 and r.nl == "relu" for r in s1)
    s2 = rows[5:7]
    assert [r.out for r in s2] == [32, 32] and [r.exp for r in s2] == [96, 96]
    assert rows[7].nl == "hswish"  # the 80 stage on: h-swish
    last_conv, pool, fc = rows[-3:]
    assert (last_conv.out, last_conv.nl) == (960, "hswish") and pool.op == "pool" and fc.out == 1280
    assert len(rows) == 2 + 3 + 2 + 3 + 1 + 2 + 3
    assert spec.se_mode == "mnv3"


def test_size_is_the_product_of_choice_counts():
    for space in SPACES.values():
        assert space.size() == math.prod(len(v) for v in space.choices().values())
    assert get_space("large").size() == 108**5
    assert get_space("small").size() == 72 * 108**4
    assert get_space("large-nl").size() == 216**5


def test_num_distinct_nets_by_brute_force():
    data = get_space("small").to_dict()
    data.update(name="tiny", stages=data["stages"][:2], kernels=[3], expands=[3, 6], known=[])
    space = SearchSpace.from_dict(data)
    points = list(itertools.product(*space.choices().values()))
    assert len(points) == space.size()
    nets = {space.decode(dict(zip(space.names(), p))).rows for p in points}
    assert len(nets) == space.num_distinct_nets() < space.size()  # x0.75 and x1.0 of 16 and 24 coincide


@pytest.mark.parametrize("name", list(SPACES))
def test_encode_decode_round_trip(name):
    space = get_space(name)
    rng = random.Random(0)
    for _ in range(40):
        params = space.sample_params(rng)
        spec = space.decode(params, resolution=96, num_classes=7)
        encoded = space.encode(spec)
        assert encoded is not None and list(encoded) == space.names()
        assert space.decode(encoded, resolution=96, num_classes=7).rows == spec.rows
        assert space.nearest(spec) == encoded


def test_nets_outside_the_space_do_not_encode():
    large = get_space("large")
    for net in ("mnasnet-a1", "mnv3-large", "mnv3-small", "mnv2-100"):
        assert large.encode(zoo(net)) is None
    assert get_space("small").encode(zoo("mnv3-small")) is None


def test_known_points():
    large = get_space("large")
    points = large.known_points()
    assert set(points) == {"mnasnet-a1", "mnv3-large"}
    a1 = points["mnasnet-a1"]
    for i, (n, k, _, e, _, se) in enumerate(MNASNET_A1_STAGES[:5], start=1):
        assert (a1[f"s{i}_layers"], a1[f"s{i}_kernel"], a1[f"s{i}_expand"], a1[f"s{i}_se"], a1[f"s{i}_width"]) == (
            n, k, e, se, 1.0)
    v3 = points["mnv3-large"]
    assert [v3[f"s{i}_expand"] for i in range(1, 6)] == [3, 3, 3, 6, 6]
    assert [v3[f"s{i}_kernel"] for i in range(1, 6)] == [3, 5, 3, 3, 5]
    assert [v3[f"s{i}_se"] for i in range(1, 6)] == [0.0, 0.25, 0.0, 0.25, 0.25]
    assert [v3[f"s{i}_layers"] for i in range(1, 6)] == [2, 3, 4, 2, 3]
    # Only the 24 and 80 stages' exp sizes differ from the published net.
    diff = [(a.exp, b.exp) for a, b in zip(large.decode(v3).rows, zoo("mnv3-large").rows) if a != b]
    assert diff == [(48, 64), (120, 240), (240, 200), (240, 184), (240, 184)]
    small = get_space("small").known_points()["mnv3-small"]
    assert [small[f"s{i}_expand"] for i in range(1, 6)] == [3, 4, 6, 3, 6]
    assert get_space("large-nl").known_points()["mnasnet-a1"]["s5_nl"] == "relu"
    assert get_space("large-nl").known_points()["mnv3-large"]["s5_nl"] == "hswish"


def test_known_points_enqueue_into_a_study():
    space = get_space("large")
    study = optuna.create_study(direction="maximize")
    assert space.enqueue_known_points(study) == ["mnasnet-a1", "mnv3-large"]
    for name in ("mnasnet-a1", "mnv3-large"):
        trial = study.ask()
        space.suggest(trial)
        assert trial.params == space.known_points()[name]
        assert trial.user_attrs["known_point"] == name
        study.tell(trial, 0.1)
    with pytest.raises(UserError, match="mnv2-100"):
        space.enqueue_known_points(study, ["mnv2-100"])


@pytest.mark.parametrize("name", list(SPACES))
def test_all_ops_covers_every_sampled_net(name):
    space = get_space(name)
    keys = {op.key for op in space.all_ops()}
    assert len(keys) == len(space.all_ops())  # distinct
    rng = random.Random(1)
    for _ in range(200):
        assert {op.key for op in ops(space.sample(rng))} <= keys
    for params in space.known_points().values():
        assert {op.key for op in ops(space.decode(params))} <= keys


@pytest.mark.parametrize("name", ["large", "small"])
def test_all_ops_is_exactly_the_reachable_set(name):
    """Decode a covering set (every stage's first-layer input width x its choices, with the
    most layers): its op keys must be all_ops' keys, no more and no fewer."""
    space = get_space(name)
    choices = space.choices()
    base = {k: v[-1] for k, v in choices.items()}
    seen: set[str] = set()
    for i in range(1, len(space.stages) + 1):
        fields = [f"s{i}_{f}" for f in ("kernel", "expand", "se", "width", "nl") if f"s{i}_{f}" in choices]
        fields += [f"s{i - 1}_width"] if i > 1 else []
        for combo in itertools.product(*(choices[f] for f in fields)):
            params = {**base, **dict(zip(fields, combo))}
            seen |= {op.key for op in ops(space.decode(params))}
    assert seen == {op.key for op in space.all_ops()}


def test_op_counts_and_geometry():
    assert {n: len(s.all_ops()) for n, s in SPACES.items()} == {
        "large": 594, "small": 473, "large-nl": 1182, "small-nl": 941}
    task = get_space("large").with_task(num_classes=10, in_channels=1, resolution=32)
    assert task.all_ops()[0].key.startswith("conv|in=32x32x1|")
    assert get_space("large").all_ops(resolution=224)[0].key.startswith("conv|in=224x224x3|")
    assert len(task.all_ops(resolution=224, in_channels=3, num_classes=1000)) == 594


def test_bad_names_and_values_are_user_errors():
    with pytest.raises(UserError, match="'huge'"):
        get_space("huge")
    space = get_space("large")
    params = space.sample_params(random.Random(0))
    with pytest.raises(UserError, match="s2_kernel = 7"):
        space.decode({**params, "s2_kernel": 7})
    missing = dict(params)
    del missing["s4_width"]
    with pytest.raises(UserError, match="s4_width"):
        space.decode(missing)


def test_custom_space_from_json(tmp_path):
    path = tmp_path / "space.json"
    data = get_space("small").to_dict()
    data["name"] = "mine"
    path.write_text(json.dumps(data))
    space = get_space(str(path))
    assert space.name == "mine" and space.choices() == get_space("small").choices()
    assert space.size() == get_space("small").size()
    bad = dict(data, stages=[{"out": 16, "stride": 3, "layers": 1}])
    path.write_text(json.dumps(bad))
    with pytest.raises(UserError, match="stride=3"):
        get_space(str(path))
    path.write_text("{")
    with pytest.raises(UserError, match="malformed JSON"):
        get_space(str(path))
    with pytest.raises(UserError, match="no-such"):
        get_space(str(tmp_path / "no-such.json"))


def test_describe_and_cli(capsys):
    text = describe("large")
    assert "size: 14,693,280,768 points" in text and "latency ops: 594" in text
    assert "known point mnasnet-a1" in text and "s5" in text

    from nas.space_cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["space", "show", "small"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "space small" in out and "latency ops: 473" in out
    args = parser.parse_args(["space", "show", "nope"])
    with pytest.raises(UserError, match="'nope'"):
        args.func(args)
