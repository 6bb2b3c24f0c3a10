"""INT8 models: onnxruntime static quantization of an op or a whole net.

QDQ format, per-channel weights, activations QUInt8 and weights QInt8: on x86 the default
int8 activations leave convolutions unfused and run 2-4x slower than float. Activation
ranges are calibrated (MinMax) on random normal inputs by default, or on real inputs given
as arrays. onnxruntime has no int8 kernel for HardSwish/HardSigmoid, so those stay float
between quantize/dequantize pairs: that is part of what an INT8 table measures.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from search_space.errors import UserError


class _Reader:
    """CalibrationDataReader over a list of feed dicts."""

    def __init__(self, feeds: list[dict]) -> None:
        self._it = iter(feeds)

    def get_next(self):
        return next(self._it, None)

    def rewind(self):  # pragma: no cover - not used by MinMax
        pass


def calibration_feeds(input_shapes: Sequence[Sequence[int]], n: int = 8, seed: int = 0,
                      data: np.ndarray | None = None) -> list[dict]:
    """Feeds named in0, in1, ...: `n` random normal batches, or batches cut from `data`
    (an array of samples shaped like the first input without its batch dimension)."""
    rng = np.random.default_rng(seed)
    feeds = []
    if data is not None:
        shape = tuple(input_shapes[0][1:])
        if len(input_shapes) != 1 or tuple(data.shape[1:]) != shape:
            raise UserError(f"calibration data shape {tuple(data.shape)}: expected (N, {', '.join(map(str, shape))})")
        for i in range(min(n, len(data))):
            feeds.append({"in0": np.ascontiguousarray(data[i: i + 1], dtype=np.float32)})
        return feeds
    for _ in range(n):
        feeds.append({f"in{j}": rng.standard_normal(tuple(s)).astype(np.float32) for j, s in enumerate(input_shapes)})
    return feeds


def quantize_model(model: bytes | str | Path, input_shapes: Sequence[Sequence[int]], n_calib: int = 8,
                   seed: int = 0, data: np.ndarray | None = None, workdir: str | Path | None = None) -> bytes:
    """Float ONNX (bytes or path) -> INT8 QDQ ONNX bytes."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    feeds = calibration_feeds(input_shapes, n_calib, seed, data)
    with tempfile.TemporaryDirectory(dir=workdir, prefix="q8-") as tmp:
        src, pre, dst = Path(tmp, "f32.onnx"), Path(tmp, "pre.onnx"), Path(tmp, "int8.onnx")
        if isinstance(model, (bytes, bytearray)):
            src.write_bytes(model)
        else:
            src = Path(model)
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # quantize_static logs a hint per call at WARNING
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
                except Exception:  # noqa: BLE001 - pre-processing is an optimization only
                    pre = src
                quantize_static(
                    str(pre), str(dst), _Reader(feeds), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"CalibTensorRangeSymmetric": False},
                )
        finally:
            root.setLevel(level)
        # quantize_static may leave an augmented model next to the output; only dst matters.
        return dst.read_bytes()


def load_calibration_data(path: str | Path) -> np.ndarray:
    """Real calibration images from a .npy file, shaped (N, C, H, W), float32."""
    path = Path(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise UserError(f"{path}: no such calibration data file") from None
    except (ValueError, OSError) as exc:
        raise UserError(f"{path}: not a .npy array ({exc.__class__.__name__})") from None
    if arr.ndim != 4:
        raise UserError(f"{path}: calibration data shape {arr.shape}: expected (N, C, H, W)")
    return arr.astype(np.float32, copy=False)

