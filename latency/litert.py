"""LiteRT (TFLite's successor): convert ops and whole nets from the same torch builder.

Timing a .tflite file needs only `ai-edge-litert` + numpy (see runner.py); converting one
needs `litert-torch` (the `litert` extra: jax, transformers, ~1.1 GB). Both come with
`pip install -e '.[litert]'`.

Choices, measured on these machines (../shared/reference/runtimes.md):
- 4-D inputs and outputs are made channels-last (`litert_torch.to_channel_last_io`): the
  converter otherwise adds a TRANSPOSE at each end of a lone op, which inside a net does
  not exist (a lone block was 8-10% slower with them). A classifier's only 4-D tensor is its
  image input, which an app feeds as an NHWC camera frame; `run` gives NCHW outputs back.
- Converting costs ~1.2 s per op and up to ~1 GB of memory (vs 0.02 s for the ONNX
  export), so converted files are cached by op key (or net spec), shapes and converter
  versions under ~/.cache/mnv3-nas/litert/v<CONVERT_VERSION> (MNV3_NAS_CACHE moves it); a
  rebuilt table converts nothing twice.
- INT8 (`--int8`): litert-torch's PT2E static path (torch.export, torchao's prepare/convert
  with litert-torch's symmetric per-channel quantizer, activation ranges observed on a few
  random batches or real images). Ops the quantizer leaves alone (hardswish, the SE gate's
  multiply) run in float between DEQUANTIZE and QUANTIZE, as they would in an app's net.
  About 1.5x the float conversion time.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from search_space.errors import UserError

RUNTIME = "litert"
INSTALL_HINT = "pip install -e '.[litert]' (ai-edge-litert + litert-torch, ~1.1 GB)"


def _dist_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def converter_version() -> str:
    """`litert-torch X` of the installed converter, or a UserError naming the extra."""
    v = _dist_version("litert-torch")
    if v is None:
        raise UserError(f"--runtime litert needs the LiteRT converter: {INSTALL_HINT}")
    return f"litert-torch {v}"


def available() -> bool:
    """Can this environment convert and time LiteRT models?"""
    return _dist_version("litert-torch") is not None and _dist_version("ai-edge-litert") is not None


# Bump when what a converted file holds changes (conversion settings here, or the builders in
# search_space/ that make ops and nets): files of another version are never read.
CONVERT_VERSION = 1


def cache_dir() -> Path:
    root = os.environ.get("MNV3_NAS_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "mnv3-nas")
    return Path(root) / "litert" / f"v{CONVERT_VERSION}"


@contextlib.contextmanager
def _silenced():
    """litert-torch prints a progress tree on stdout and torchao/absl print import-time noise
    on stderr (C level): send file descriptors 1 and 2 to a file while inside, and show its
    tail only if the conversion fails."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as log, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                yield
        except BaseException:
            sys.stdout.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            log.seek(0)
            tail = log.read().decode(errors="replace").strip().splitlines()[-15:]
            print("\n".join(tail), file=sys.stderr)
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _converter():
    converter_version()
    with _silenced():
        import litert_torch  # noqa: PLC0415 - 5 s import, only when converting
    return litert_torch


def to_nhwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if x.ndim == 4 else x


def convert_module(module: torch.nn.Module, inputs: Sequence[torch.Tensor], *, outputs_nhwc: bool = True,
                   precision: str = "float32", calib: Sequence[Sequence[torch.Tensor]] | None = None) -> bytes:
    """Convert `module` (eval mode) called on NCHW `inputs` to a .tflite flatbuffer whose 4-D
    inputs (and, with `outputs_nhwc`, 4-D outputs) are NHWC. ``precision="int8"``: static
    PT2E quantization first (see `_quantized`), activation ranges observed on `calib`
    (NCHW input tuples; default: 8 random normal batches)."""
    if precision not in ("float32", "int8"):
        raise UserError(f"precision {precision!r}: LiteRT tables are float32 or int8")
    lt = _converter()
    module = module.eval()
    inputs = tuple(inputs)
    with torch.no_grad():
        outs = module(*inputs)
    outs = outs if isinstance(outs, (tuple, list)) else (outs,)
    args = [i for i, t in enumerate(inputs) if t.dim() == 4]
    out_idx = [i for i, t in enumerate(outs) if t.dim() == 4] if outputs_nhwc else []
    wrapped = module
    if args or out_idx:
        wrapped = lt.to_channel_last_io(module, args=args, outputs=out_idx)

    def nhwc(ts):
        return tuple(t.permute(0, 2, 3, 1).contiguous() if i in args else t for i, t in enumerate(ts))

    sample = nhwc(inputs)
    with _silenced(), torch.no_grad():
        if precision == "int8":
            if calib is None:
                g = torch.Generator().manual_seed(1)
                calib = [tuple(torch.randn(t.shape, generator=g) for t in inputs) for _ in range(8)]
            model, quant = _quantized(wrapped.eval(), sample, [nhwc(c) for c in calib])
            return bytes(lt.convert(model, sample, quant_config=quant).model_content())
        return bytes(lt.convert(wrapped.eval(), sample).model_content())


# What an INT8 LiteRT table times; recorded in its metadata.
QUANTIZATION = ("litert-torch PT2E static: weights int8 per-channel symmetric, activations int8 per-tensor "
                "(histogram observer) where the quantizer annotates the op (conv, linear, add, pooling), "
                "float elsewhere (hardswish, SE scaling); calibrated on 8 random batches")


def _quantized(module, sample, calib):
    """PT2E static quantization as litert-torch takes it: export, observe `calib`, convert.
    Ops the quantizer does not annotate (hardswish, sigmoid-gated SE multiply) stay float
    between DEQUANTIZE/QUANTIZE: part of what an INT8 table measures, as it is in an app."""
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import quantize_pt2e

    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = quantize_pt2e.prepare_pt2e(torch.export.export(module, sample).module(), quantizer)
    for batch in calib:
        prepared(*batch)
    return quantize_pt2e.convert_pt2e(prepared, fold_quantize=False), QuantConfig(pt2e_quantizer=quantizer)


def _cache_path(kind: str, key: str, shapes) -> Path:
    ident = "|".join([kind, key, repr([list(s) for s in shapes]), converter_version(), f"torch {torch.__version__}"])
    return cache_dir() / f"{kind}-{hashlib.sha1(ident.encode()).hexdigest()[:20]}.tflite"


def _cached(kind: str, key: str, shapes, make) -> bytes:
    path = _cache_path(kind, key, shapes)
    if path.exists() and path.stat().st_size > 0:
        return path.read_bytes()
    data = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return data


def convert_op(op, seed: int = 0, precision: str = "float32") -> bytes:
    """One op alone, built with the net builder (`search_space.build_op`), converted (cached)."""
    from search_space.latency_ops import build_op

    from .export import one_thread, op_inputs

    def make():
        with one_thread():
            torch.manual_seed(seed)
            return convert_module(build_op(op), op_inputs(op, seed), precision=precision)

    return _cached(_kind("op", precision), op.key, op.input_shapes, make)


def convert_net(spec, seed: int = 0, precision: str = "float32", calib_data: np.ndarray | None = None) -> bytes:
    """A whole net (`search_space.build`) at batch 1, NHWC image input, converted (cached by
    the spec's JSON, name included). INT8 activation ranges come from `calib_data` (real
    images, N x C x H x W: the first 8) when given, else from random inputs."""
    from search_space.builder import build

    from .export import net_input_shape, one_thread, random_inputs

    shape = net_input_shape(spec)

    def make():
        with one_thread():
            torch.manual_seed(seed)
            calib = None
            if calib_data is not None:
                calib = [(torch.from_numpy(np.ascontiguousarray(calib_data[i:i + 1], dtype=np.float32)),)
                         for i in range(min(8, len(calib_data)))]
            return convert_module(build(spec), random_inputs([shape], seed), precision=precision, calib=calib)

    key = spec.to_json() if hasattr(spec, "to_json") else repr(spec)
    if calib_data is not None:
        key += "|calib " + hashlib.sha1(np.ascontiguousarray(calib_data[:8], dtype=np.float32).tobytes()).hexdigest()
    return _cached(_kind("net", precision), key, [shape], make)


def _kind(kind: str, precision: str) -> str:
    return kind if precision == "float32" else f"{kind}-{precision}"


def run(model: bytes | str | Path, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Outputs (NCHW where 4-D) of a converted model on NCHW `inputs`, one thread."""
    from .runner import make_session

    sess = make_session(model, threads=1, runtime=RUNTIME)
    return sess.run([to_nhwc(np.asarray(x, dtype=np.float32)) for x in inputs], nchw_outputs=True)
