"""Architecture specs, the zoo of published nets, the torch builder and analytic counting.

Specs, counting and tables need no torch; the torch-backed names (build, ops, weights loading,
search spaces) are imported on first use, so `nas --help` and `nas reproduce` start fast.
"""

from importlib import import_module

from .counting import count, count_madds, count_params
from .errors import SpecError, UserError
from .render import diff, render, render_diff
from .spec import ArchSpec, Layer, Row, SegHead, make_divisible, scale_channels
from .zoo import ZOO_NAMES, zoo

_LAZY = {
    "build": "builder",
    "Op": "latency_ops", "build_op": "latency_ops", "distinct_ops": "latency_ops", "ops": "latency_ops",
    "load_torchvision_state_dict": "torchvision_compat",
    "SPACES": "spaces", "SearchSpace": "spaces", "get_space": "spaces",
}

__all__ = [
    "ArchSpec", "Layer", "Row", "SegHead", "SpecError", "UserError", "ZOO_NAMES",
    "count", "count_madds", "count_params", "diff", "make_divisible", "render", "render_diff",
    "scale_channels", "zoo", *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
