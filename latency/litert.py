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


def convert_module(module: torch.nn.Module, inputs: Sequence[torch.Tensor], *, outputs_nhwc: bool = True) -> bytes:
    """Convert `module` (eval mode) called on NCHW `inputs` to a .tflite flatbuffer whose 4-D
    inputs (and, with `outputs_nhwc`, 4-D outputs) are NHWC."""
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
    sample = tuple(t.permute(0, 2, 3, 1).contiguous() if i in args else t for i, t in enumerate(inputs))
    with _silenced(), torch.no_grad():
        return bytes(lt.convert(wrapped.eval(), sample).model_content())


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


def convert_op(op, seed: int = 0) -> bytes:
    """One op alone, built with the net builder (`search_space.build_op`), converted (cached)."""
    from search_space.latency_ops import build_op

    from .export import one_thread, op_inputs

    def make():
        with one_thread():
            torch.manual_seed(seed)
            return convert_module(build_op(op), op_inputs(op, seed))

    return _cached("op", op.key, op.input_shapes, make)


def convert_net(spec, seed: int = 0) -> bytes:
    """A whole net (`search_space.build`) at batch 1, NHWC image input, converted (cached by
    the spec's JSON, name included)."""
    from search_space.builder import build

    from .export import net_input_shape, one_thread, random_inputs

    shape = net_input_shape(spec)

    def make():
        with one_thread():
            torch.manual_seed(seed)
            return convert_module(build(spec), random_inputs([shape], seed))

    return _cached("net", spec.to_json() if hasattr(spec, "to_json") else repr(spec), [shape], make)


def run(model: bytes | str | Path, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Outputs (NCHW where 4-D) of a converted model on NCHW `inputs`, one thread."""
    from .runner import make_session

    sess = make_session(model, threads=1, runtime=RUNTIME)
    return sess.run([to_nhwc(np.asarray(x, dtype=np.float32)) for x in inputs], nchw_outputs=True)
