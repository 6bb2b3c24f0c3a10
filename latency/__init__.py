"""On-device latency: per-op ONNX export, onnxruntime timing, lookup tables, validation.

    from latency import LatencyTable, Predictor
    table = LatencyTable.load("large.parquet")
    ms = Predictor(table)(spec)            # calibrated sum of the spec's ops (raises if ops missing)

Build/extend a table: `latency.build.build_table`; calibrate: `latency.predict.calibrate`;
validate: `latency.validate.validate`; remote devices: `latency.remote` + the standalone
`latency/runner.py`. CLI: `nas latency --help` (or `python -m latency --help`).
"""

from .ops import enumerate_ops, get_space, net_ops
from .predict import MissingOpsError, Prediction, Predictor, calibrate, fit_calibration, predict
from .table import LatencyTable
from .timing import Protocol

__all__ = [
    "LatencyTable", "MissingOpsError", "Prediction", "Predictor", "Protocol", "calibrate", "enumerate_ops",
    "fit_calibration", "get_space", "net_ops", "predict",
]
