"""Architecture specs, the zoo of published nets, the torch builder and analytic counting."""

from .builder import build
from .counting import count, count_madds, count_params
from .errors import SpecError, UserError
from .spec import ArchSpec, Layer, Row, SegHead, make_divisible, scale_channels
from .zoo import ZOO_NAMES, zoo

__all__ = [
    "ArchSpec", "Layer", "Row", "SegHead", "SpecError", "UserError", "ZOO_NAMES",
    "build", "count", "count_madds", "count_params", "make_divisible", "scale_channels", "zoo",
]

from .ops import Op, build_op, distinct_ops, ops  # noqa: E402

__all__ += ["Op", "build_op", "distinct_ops", "ops"]

from .render import diff, render, render_diff  # noqa: E402
from .torchvision_compat import load_torchvision_state_dict  # noqa: E402

__all__ += ["diff", "render", "render_diff", "load_torchvision_state_dict"]
from .spaces import SPACES, SearchSpace, get_space  # noqa: E402,F401
