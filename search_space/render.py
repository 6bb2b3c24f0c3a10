"""Paper-style tables of specs, and a row-by-row diff of two specs."""

from __future__ import annotations

import difflib

from .counting import count, per_layer_costs
from .spec import ArchSpec, Layer, describe_nl

COLUMNS = ("Input", "Operator", "exp size", "#out", "SE", "NL", "s")


def _input(shape: tuple[int, int, int]) -> str:
    c, h, w = shape
    return f"{h}²×{c}" if h == w else f"{h}×{w}×{c}"


def _operator(layer: Layer) -> str:
    row = layer.row
    if row.op == "pool":
        return f"pool, {layer.in_shape[1]}x{layer.in_shape[2]}"
    if row.op == "fc":
        return "conv2d 1x1, NBN"
    name = {"conv": "conv2d", "bneck": "bneck", "dwsep": "dw-sep"}[row.op]
    text = f"{name}, {row.kernel}x{row.kernel}"
    if row.dilation > 1:
        text += f" (dil {row.dilation})"
    if row.op == "conv" and not row.bn:
        text += ", NBN"
    return text


def table_rows(spec: ArchSpec) -> list[tuple[str, ...]]:
    """The spec as the paper's table: one tuple of COLUMNS per row, classifier included."""
    out = []
    for layer in spec.layers():
        row = layer.row
        exp = str(row.exp) if row.op == "bneck" else "-"
        nout = str(row.out) if row.op != "pool" else "-"
        se = "✓" if row.se > 0 else "-"
        nl = describe_nl(row.nl) if row.op != "pool" else "-"
        out.append((_input(layer.in_shape), _operator(layer), exp, nout, se, nl, str(row.stride)))
    last = spec.layers()[-1].out_shape
    if spec.seg_head is not None:
        low = spec.layers()[spec.seg_head.low_row].out_shape
        out.append((f"{_input(low)} + {_input(last)}", f"LR-ASPP head, {spec.seg_head.inter_channels} filters",
                    "-", str(spec.num_classes), "-", "-", "-"))
    else:
        out.append((_input(last), "conv2d 1x1, NBN", "-", "k", "-", "-", "1"))
    return out


def format_table(headers: tuple[str, ...] | list[str], rows: list[tuple[str, ...]], markdown: bool = False) -> str:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
        return "\n".join(lines)
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*headers), "  ".join("-" * w for w in widths)]
    lines += [fmt.format(*[str(c) for c in r]) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def render(spec: ArchSpec, markdown: bool = False) -> str:
    cost = count(spec)
    title = f"{spec.name}: {cost.params:,} params, {cost.madds / 1e6:.1f}M MAdds at {spec.resolution}x{spec.resolution}"
    if spec.width_mult != 1.0:
        title += f", width x{spec.width_mult:g}"
    if spec.seg_head is not None:
        title += f", output stride {spec.output_stride()}"
    table = format_table(COLUMNS, table_rows(spec), markdown)
    text = f"{title}\n\n{table}" if markdown else f"{title}\n{table}"
    if spec.notes:
        text += f"\n\nNote: {spec.notes}"
    return text


def per_layer_table(spec: ArchSpec) -> list[tuple[str, ...]]:
    """Rows with their params and MAdds, for reports."""
    rows = table_rows(spec)
    costs = per_layer_costs(spec)
    return [r + (f"{c.params:,}", f"{c.madds / 1e6:.2f}M") for r, c in zip(rows, costs)]


# ---- diff ----------------------------------------------------------------------------------
DIFF_COLUMNS = ("Operator", "exp size", "#out", "SE", "NL", "s")


def _cells(row: tuple[str, ...]) -> tuple[str, ...]:
    return row[1:]  # the input shape follows from earlier rows, so it is not compared


def diff(a: ArchSpec, b: ArchSpec) -> list[tuple[str, tuple[str, ...], tuple[str, ...], tuple[int, ...]]]:
    """Row-by-row alignment of two specs.

    Returns (mark, row_a, row_b, changed_columns) with mark ' ' same, '~' changed, '-' only
    in a, '+' only in b. Rows are aligned with difflib so an inserted block does not shift
    every later comparison.
    """
    ra, rb = table_rows(a), table_rows(b)
    ka = [(_cells(r)[0], _cells(r)[5]) for r in ra]  # align on operator and stride
    kb = [(_cells(r)[0], _cells(r)[5]) for r in rb]
    out = []
    empty = ("",) * len(COLUMNS)
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=ka, b=kb, autojunk=False).get_opcodes():
        if tag == "equal" or tag == "replace":
            n = min(i2 - i1, j2 - j1)
            for k in range(n):
                x, y = ra[i1 + k], rb[j1 + k]
                changed = tuple(i for i in range(1, len(COLUMNS)) if x[i] != y[i])
                out.append(("~" if changed else " ", x, y, changed))
            for k in range(i1 + n, i2):
                out.append(("-", ra[k], empty, ()))
            for k in range(j1 + n, j2):
                out.append(("+", empty, rb[k], ()))
        elif tag == "delete":
            out += [("-", ra[k], empty, ()) for k in range(i1, i2)]
        elif tag == "insert":
            out += [("+", empty, rb[k], ()) for k in range(j1, j2)]
    return out


def render_diff(a: ArchSpec, b: ArchSpec, markdown: bool = False) -> str:
    """Both specs side by side; changed cells are marked with '*'."""
    sep = "vs" if markdown else "|"  # a bare '|' would split a markdown cell
    headers = ["", *(f"{c} ({a.name})" if c == "Operator" else c for c in DIFF_COLUMNS), sep,
               *(f"{c} ({b.name})" if c == "Operator" else c for c in DIFF_COLUMNS)]
    rows = []
    for mark, x, y, changed in diff(a, b):
        left = [x[i] for i in range(1, len(COLUMNS))]
        right = [y[i] + ("*" if i in changed else "") for i in range(1, len(COLUMNS))]
        rows.append((mark, *left, "" if markdown else "|", *right))
    same = sum(1 for r in rows if r[0] == " ")
    summary = f"{same} of {len(rows)} rows identical; '~' changed (cells marked *), '-' only in {a.name}, '+' only in {b.name}"
    ca, cb = count(a), count(b)
    summary += (f"\nparams {ca.params:,} vs {cb.params:,}; MAdds {ca.madds / 1e6:.1f}M vs {cb.madds / 1e6:.1f}M")
    return format_table(headers, rows, markdown) + "\n" + summary
