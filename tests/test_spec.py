"""Specs: JSON round trip, validation errors, rendering, diff, counting against built models."""

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

import search_space as ss
from search_space import ArchSpec, Row, SpecError
from search_space.render import diff, table_rows


def _write(tmp_path, data, name="spec.json"):
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else json.dumps(data))
    return p


@pytest.mark.parametrize("name", ss.ZOO_NAMES)
def test_json_round_trip(name, tmp_path):
    spec = ss.zoo(name)
    path = tmp_path / "s.json"
    spec.save(path)
    again = ArchSpec.load(path)
    assert again == spec
    assert json.loads(path.read_text())["version"] == 1


@pytest.mark.parametrize("name", ss.ZOO_NAMES)
def test_counts_match_built_model(name):
    spec = ss.zoo(name)
    if spec.seg_head is not None:
        spec = spec.with_rows(spec.rows, resolution=224)
    model = ss.build(spec).eval()
    assert ss.count_params(spec) == sum(p.numel() for p in model.parameters())
    assert ss.count_madds(spec) == hook_madds(model, spec)


def hook_madds(model: nn.Module, spec: ArchSpec) -> int:
    """Multiply-adds of conv and linear layers, counted on a real forward pass."""
    total = 0

    def conv_hook(m, inp, out):
        nonlocal total
        k = m.kernel_size[0] * m.kernel_size[1]
        total += out.numel() * (m.in_channels // m.groups) * k

    def linear_hook(m, inp, out):
        nonlocal total
        total += m.in_features * m.out_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    with torch.no_grad():
        model(torch.zeros(1, spec.in_channels, spec.resolution, spec.resolution))
    for h in handles:
        h.remove()
    return total


def test_width_multiplier_rounds_to_multiples_of_8():
    spec = ss.zoo("mnv3-large-075")
    for row in spec.rows:
        if row.op in ("conv", "bneck"):
            assert row.out % 8 == 0
        if row.op == "bneck":
            assert row.exp % 8 == 0
    assert ss.make_divisible(12) == 16  # never more than 10% below the target
    assert ss.make_divisible(11.2) == 16
    assert ss.make_divisible(33.6) == 32


def test_resolution_changes_shapes_not_params():
    spec = ss.zoo("mnv3-small")
    small = spec.with_rows(spec.rows, resolution=160)
    assert ss.count_params(small) == ss.count_params(spec)
    assert ss.count_madds(small) < ss.count_madds(spec)
    assert small.layers()[-3].in_shape[1:] == (5, 5)


def test_published_counts():
    assert ss.count_params(ss.zoo("mnv3-large")) == 5_483_032
    assert ss.count_params(ss.zoo("mnv3-small")) == 2_542_856
    assert ss.count_params(ss.zoo("lraspp-mnv3-large")) == 3_221_538
    assert abs(ss.count_madds(ss.zoo("mnv3-large")) / 219e6 - 1) < 0.02
    assert abs(ss.count_madds(ss.zoo("mnv3-small")) / 56e6 - 1) < 0.02


def test_lraspp_output_stride_and_shape():
    spec = ss.zoo("lraspp-mnv3-large").with_rows(ss.zoo("lraspp-mnv3-large").rows, resolution=128)
    assert spec.output_stride() == 16
    out = ss.build(spec).eval()(torch.zeros(1, 3, 128, 128))
    assert out.shape == (1, 21, 128, 128)


# ---- validation: one line naming row and field ---------------------------------------------
BASE = ss.zoo("mnv3-small").to_dict()


@pytest.mark.parametrize("row, field, value, needle", [
    (3, "out", -4, "'out' = -4"),
    (3, "out", 0, "'out' = 0"),
    (3, "stride", 3, "'stride' = 3"),
    (3, "nl", "gelu", "'nl' = 'gelu'"),
    (3, "kernel", 4, "'kernel' = 4"),
    (3, "exp", 0, "'exp' = 0"),
])
def test_bad_rows_name_row_and_field(tmp_path, row, field, value, needle):
    data = json.loads(json.dumps(BASE))
    data["rows"][row][field] = value
    with pytest.raises(SpecError) as err:
        ArchSpec.load(_write(tmp_path, data))
    msg = str(err.value)
    assert needle in msg and f"row {row}" in msg and "\n" not in msg


@pytest.mark.parametrize("text, needle", [
    ("{not json", "malformed JSON"),
    ("[]", "expected a JSON object"),
    (json.dumps({**BASE, "version": 99}), "'version' = 99"),
    (json.dumps({**BASE, "schema": "other"}), "'schema'"),
    (json.dumps({**BASE, "rows": []}), "'rows'"),
    (json.dumps({**BASE, "colour": 1}), "unknown field 'colour'"),
])
def test_bad_files(tmp_path, text, needle):
    with pytest.raises(SpecError) as err:
        ArchSpec.load(_write(tmp_path, text))
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(SpecError, match="no such spec file"):
        ArchSpec.load(tmp_path / "nope.json")


def test_nl_aliases_and_se_bool(tmp_path):
    data = json.loads(json.dumps(BASE))
    data["rows"][2]["nl"] = "HS"
    data["rows"][2]["se"] = True
    spec = ArchSpec.load(_write(tmp_path, data))
    assert spec.rows[2].nl == "hswish" and spec.rows[2].se == 0.25


@pytest.mark.parametrize("args, needle", [
    (["show", "BAD_JSON"], "malformed JSON"),
    (["show", "STRIDE3"], "'stride' = 3"),
    (["show", "nonexistent-net"], "neither a zoo net"),
    (["export", "mnv3-small", "--onnx", "/nonexistent/dir/x.onnx"], "does not exist"),
])
def test_cli_bad_input_exit_2(tmp_path, args, needle):
    bad = _write(tmp_path, "{oops", "bad.json")
    data = json.loads(json.dumps(BASE))
    data["rows"][4]["stride"] = 3
    stride3 = _write(tmp_path, data, "stride3.json")
    args = [str(bad) if a == "BAD_JSON" else str(stride3) if a == "STRIDE3" else a for a in args]
    proc = subprocess.run([sys.executable, "-m", "nas.cli", *args], capture_output=True, text=True)
    assert proc.returncode == 2
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


# ---- rendering and diff --------------------------------------------------------------------
def test_table_matches_paper_table_1():
    rows = table_rows(ss.zoo("mnv3-large"))
    assert rows[0] == ("224²×3", "conv2d, 3x3", "-", "16", "-", "HS", "2")
    assert rows[4] == ("56²×24", "bneck, 5x5", "72", "40", "✓", "RE", "2")
    assert rows[13] == ("14²×112", "bneck, 5x5", "672", "160", "✓", "HS", "2")
    assert rows[16] == ("7²×160", "conv2d, 1x1", "-", "960", "-", "HS", "1")
    assert rows[17][1] == "pool, 7x7"
    assert rows[18] == ("1²×960", "conv2d 1x1, NBN", "-", "1280", "-", "HS", "1")
    assert rows[19][3] == "k"
    assert len(rows) == 20


def test_diff_marks_changed_cells_and_insertions():
    a = ss.zoo("mnv3-small")
    rows = list(a.rows)
    rows[5] = Row("bneck", 40, kernel=5, exp=120, se=0.25, nl="hswish")
    rows.insert(11, Row("bneck", 96, kernel=3, exp=576, se=0.25, nl="hswish"))
    b = a.with_rows(rows, name="variant")
    d = diff(a, b)
    marks = [m for m, *_ in d]
    assert marks.count("+") == 1
    changed = [c for m, x, y, c in d if m == "~"]
    assert any(2 in c for c in changed)  # exp size column
    assert ss.render_diff(a, a).count("~") == 1  # only the legend mentions '~'


def test_ops_keys_distinct_and_shared():
    large = ss.ops(ss.zoo("mnv3-large"))
    keys = [o.key for o in large]
    assert len(keys) == 18
    # rows 14 and 15 of Table 1 are the same op at the same shape
    assert keys[14] == keys[15]
    assert len(set(keys)) == 15
    # the same op in another net has the same key; SE sized differently gives another key
    minimal = {o.key for o in ss.ops(ss.zoo("mnv3-large-minimal"))}
    assert keys[2] in minimal and keys[4] not in minimal
    assert keys[2] == "bneck|in=112x112x16|k3|e64|o24|s2|RE"


@pytest.mark.parametrize("name", ["mnv3-small", "lraspp-mnv3-large"])
def test_ops_rebuild_like_the_net(name):
    spec = ss.zoo(name)
    spec = spec.with_rows(spec.rows, resolution=64)
    model = ss.build(spec)
    op_params = 0
    for op in ss.ops(spec):
        module = ss.build_op(op)
        out = module(*[torch.zeros(*s) for s in op.input_shapes])
        assert out.shape[0] == 1
        op_params += sum(p.numel() for p in module.parameters())
    assert op_params == sum(p.numel() for p in model.parameters())
