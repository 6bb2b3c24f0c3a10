"""Small image-classification data sets held in memory, and batches at a chosen resolution.

Formats, recognized from a folder's contents by `load_dataset`:
- IDX (Fashion-MNIST, MNIST): ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each gzipped or plain.
- CIFAR-10 python batches: ``data_batch_1`` .. ``data_batch_5``, ``test_batch``,
  ``batches.meta``.
- An image-folder tree: one sub-folder of PNG/JPEG images per class, either directly or
  under ``train/`` and ``test/`` (or ``val/``). A single tree gets a fixed 20% test split.

The search never sees the test images: `search_splits` carves its validation set out of the
training images (as MnasNet held out 50K ImageNet training images); `test_split` is the one
way to the test set.
"""

from __future__ import annotations

import gzip
import os
import pickle
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from search_space.errors import UserError

DEFAULT_PATH = "/usr/share/datasets/fashion-mnist/"
DEFAULT_NAME = "fashion-mnist"
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
IMAGE_TEST_FRACTION = 0.2

_EXPECTED = ("IDX files (train-images-idx3-ubyte[.gz] ...), CIFAR-10 python batches "
             "(data_batch_1.., test_batch) or one sub-folder of images per class")
_IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F"}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_NAME = re.compile(r"^(train|t10k|test)-(images|labels)[.-]idx([13])-ubyte(\.gz)?$")
_CHUNK = 4096  # images per interpolate call: bounds the float copy's memory


@dataclass(eq=False)
class Dataset:
    """A whole data set in memory: images uint8 (N, C, H, W), labels int64 (N,)."""

    name: str
    train_x: torch.Tensor = field(repr=False)
    train_y: torch.Tensor = field(repr=False)
    test_x: torch.Tensor = field(repr=False)
    test_y: torch.Tensor = field(repr=False)
    num_classes: int
    in_channels: int
    class_names: list[str] = field(repr=False)
    source: str = ""
    # resized images and channel statistics, per resolution
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        for x, y, split in ((self.train_x, self.train_y, "train"), (self.test_x, self.test_y, "test")):
            if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != self.in_channels:
                raise ValueError(f"{split} images must be uint8 (N, {self.in_channels}, H, W), got "
                                 f"{x.dtype} {tuple(x.shape)}")
            if y.dtype != torch.int64 or y.shape != (x.shape[0],):
                raise ValueError(f"{split} labels must be int64 ({x.shape[0]},), got {y.dtype} {tuple(y.shape)}")
            if len(y) and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
                raise UserError(f"{self.name}: {split} labels outside 0..{self.num_classes - 1}")
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {self.num_classes} classes")

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.train_x.shape[-2:])

    def summary(self) -> str:
        h, w = self.image_size
        return (f"{self.name}: {len(self.train_y)} train / {len(self.test_y)} test images, "
                f"{self.in_channels}x{h}x{w}, {self.num_classes} classes")


# ---------------------------------------------------------------- loading

def load_dataset(path_or_name: str | os.PathLike | None = None, *, image_size: int = 64) -> Dataset:
    """Load a data set from a folder, detecting its format from the files it holds.

    ``None`` or ``"fashion-mnist"`` means the Debian package's folder. ``image_size`` is the
    square size images of an image-folder tree are resized to on load (other formats keep
    their native size; `resized` changes resolution later).
    """
    default = path_or_name is None or str(path_or_name) == DEFAULT_NAME
    folder = Path(DEFAULT_PATH if default else os.fspath(path_or_name)).expanduser()
    if not folder.is_dir():
        if default:
            raise UserError(f"Fashion-MNIST not found at {folder}: install it with "
                            "`apt-get install dataset-fashion-mnist` or pass a data folder")
        what = "is not a folder" if folder.exists() else "does not exist"
        raise UserError(f"data set folder {folder} {what}; expected a folder with {_EXPECTED}")
    name = DEFAULT_NAME if default else (folder.resolve().name or str(folder))

    files = {p.name: p for p in folder.iterdir() if p.is_file()}
    if any(_IDX_NAME.match(n) for n in files):
        return _load_idx(folder, files, name)
    if any(n.startswith("data_batch_") for n in files) or "test_batch" in files:
        return _load_cifar(folder, files, name)
    nested = folder / "cifar-10-batches-py"  # the tarball's layout
    if nested.is_dir():
        return load_dataset(nested, image_size=image_size)
    if _image_class_dirs(folder) or _split_dirs(folder):
        return _load_image_folder(folder, name, image_size)
    raise UserError(f"unrecognized data set folder {folder}: expected {_EXPECTED}")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (gzipped or plain) into an array shaped by its header."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise UserError(f"cannot decompress {path}: {e}") from None
    if len(raw) < 4 or raw[0] or raw[1] or raw[2] not in _IDX_DTYPES:
        raise UserError(f"{path} is not an IDX file (magic number {raw[:4].hex() or 'missing'})")
    ndim = raw[3]
    start = 4 + 4 * ndim
    if len(raw) < start:
        raise UserError(f"{path}: IDX header truncated")
    dims = struct.unpack(f">{ndim}I", raw[4:start])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = start + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise UserError(f"{path}: {len(raw)} bytes but its IDX header {dims} needs {expected}")
    return np.frombuffer(raw, dtype, offset=start).reshape(dims)


def _load_idx(folder: Path, files: dict[str, Path], name: str) -> Dataset:
    found: dict[tuple[str, str], Path] = {}
    for fname in sorted(files):  # sorted: plain before .gz when both exist
        m = _IDX_NAME.match(fname)
        if m:
            split = "train" if m[1] == "train" else "test"
            found.setdefault((split, m[2]), files[fname])
    arrays = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        for kind, nd in (("images", 3), ("labels", 1)):
            if (split, kind) not in found:
                raise UserError(f"IDX data set {folder} lacks {prefix}-{kind}-idx{nd}-ubyte[.gz]")
            a = read_idx(found[split, kind])
            if a.ndim != nd:
                raise UserError(f"{found[split, kind]}: expected {nd} dimensions, header has {a.ndim}")
            arrays[split, kind] = a
    for split in ("train", "test"):
        if len(arrays[split, "images"]) != len(arrays[split, "labels"]):
            raise UserError(f"{folder}: {len(arrays[split, 'images'])} {split} images but "
                            f"{len(arrays[split, 'labels'])} labels")
    num_classes = int(max(arrays["train", "labels"].max(), arrays["test", "labels"].max())) + 1
    names = FASHION_CLASSES if "fashion" in name.lower() and num_classes == 10 else \
        [str(i) for i in range(num_classes)]
    return Dataset(
        name=name,
        train_x=_images(arrays["train", "images"][:, None]),
        train_y=_labels(arrays["train", "labels"]),
        test_x=_images(arrays["test", "images"][:, None]),
        test_y=_labels(arrays["test", "labels"]),
        num_classes=num_classes, in_channels=1, class_names=names, source=str(folder))


def _load_cifar(folder: Path, files: dict[str, Path], name: str) -> Dataset:
    batches = sorted((n for n in files if re.fullmatch(r"data_batch_\d+", n)), key=lambda n: int(n[11:]))
    if not batches or "test_batch" not in files:
        raise UserError(f"CIFAR-10 data set {folder} needs data_batch_1.. and test_batch")

    def read(fname: str) -> tuple[np.ndarray, np.ndarray]:
        try:
            with open(files[fname], "rb") as f:
                d = pickle.load(f, encoding="bytes")
            x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            y = np.asarray(d[b"labels"], dtype=np.int64)
        except (pickle.UnpicklingError, KeyError, ValueError, EOFError, TypeError) as e:
            raise UserError(f"{files[fname]} is not a CIFAR-10 batch ({type(e).__name__}: {e})") from None
        if len(x) != len(y):
            raise UserError(f"{files[fname]}: {len(x)} images but {len(y)} labels")
        return x, y

    train = [read(n) for n in batches]
    test_x, test_y = read("test_batch")
    train_y = np.concatenate([y for _, y in train])
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    names = [str(i) for i in range(num_classes)]
    if "batches.meta" in files:
        with open(files["batches.meta"], "rb") as f:
            meta = pickle.load(f, encoding="bytes")
        label_names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta.get(b"label_names", [])]
        if len(label_names) >= num_classes:
            num_classes, names = len(label_names), label_names
    return Dataset(
        name=name, train_x=_images(np.concatenate([x for x, _ in train])), train_y=_labels(train_y),
        test_x=_images(test_x), test_y=_labels(test_y),
        num_classes=num_classes, in_channels=3, class_names=names, source=str(folder))


def _image_class_dirs(folder: Path) -> list[Path]:
    return [d for d in sorted(folder.iterdir()) if d.is_dir() and _image_files(d)]


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in _IMAGE_EXTS and p.is_file())


def _split_dirs(folder: Path) -> tuple[Path, Path] | None:
    """``train/`` and ``test/`` (or ``val/``), each holding class folders, if present."""
    train = folder / "train"
    for test_name in ("test", "val"):
        test = folder / test_name
        if train.is_dir() and test.is_dir() and _image_class_dirs(train):
            return train, test
    return None


def _load_image_folder(folder: Path, name: str, size: int) -> Dataset:
    try:
        from PIL import Image, ImageOps
    except ImportError:
        raise UserError(f"reading the image folder {folder} needs Pillow: pip install pillow") from None
    if size < 1:
        raise UserError(f"image size must be positive, got {size}")

    def read_tree(root: Path, classes: list[str]) -> tuple[list[np.ndarray], list[int], bool]:
        images, labels, gray = [], [], True
        for d in _image_class_dirs(root):
            if d.name not in classes:
                raise UserError(f"class folder {d} is not among the training classes")
            for p in _image_files(d):
                try:
                    with Image.open(p) as im:
                        gray &= im.mode in _GRAY_MODES
                        # crop to square, then resize: keeps the aspect ratio of the content
                        im = ImageOps.fit(im.convert("RGB"), (size, size), Image.Resampling.BILINEAR)
                        images.append(np.asarray(im, dtype=np.uint8).transpose(2, 0, 1))
                except OSError as e:
                    raise UserError(f"cannot read image {p}: {e}") from None
                labels.append(classes.index(d.name))
        return images, labels, gray

    split = _split_dirs(folder)
    train_root = split[0] if split else folder
    classes = [d.name for d in _image_class_dirs(train_root)]
    if len(classes) < 2:
        raise UserError(f"image folder {train_root} has {len(classes)} class folder(s); need at least 2")
    x, y, gray = read_tree(train_root, classes)
    x, y = np.stack(x), np.asarray(y, dtype=np.int64)
    if split:
        tx, ty, tgray = read_tree(split[1], classes)
        gray &= tgray
        tx = np.stack(tx) if tx else np.zeros((0, *x.shape[1:]), np.uint8)
        ty = np.asarray(ty, dtype=np.int64)
    else:
        # a fixed test split, independent of any search seed
        order = _stratified_order(torch.from_numpy(y), torch.Generator().manual_seed(0)).numpy()
        n_test = int(round(IMAGE_TEST_FRACTION * len(y)))
        test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
        x, y, tx, ty = x[train], y[train], x[test], y[test]
    if gray:
        x, tx = x[:, :1], tx[:, :1]
    return Dataset(
        name=name, train_x=_images(x), train_y=_labels(y), test_x=_images(tx), test_y=_labels(ty),
        num_classes=len(classes), in_channels=1 if gray else 3, class_names=classes, source=str(folder))


def _images(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(a, dtype=np.uint8, order="C"))  # a copy: IDX buffers are read-only


def _labels(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a, dtype=np.int64).copy())


# ---------------------------------------------------------------- splits

def _stratified_order(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random permutation of ``range(len(labels))`` whose every prefix holds the classes
    in (nearly, +-1) the proportions of the whole."""
    n = len(labels)
    perm = torch.randperm(n, generator=generator)
    lab = labels[perm]
    by_class = torch.argsort(lab, stable=True)  # grouped by class, random within a class
    sorted_lab = lab[by_class]
    counts = torch.bincount(sorted_lab)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(n) - starts[sorted_lab]
    # each image's position within its class as a fraction; sorting by it interleaves classes
    frac = (rank.double() + 0.5) / counts[sorted_lab].double()
    return perm[by_class[torch.argsort(frac, stable=True)]]


def _count(size: int | float, total: int, what: str) -> int:
    if isinstance(size, float) and 0 < size < 1:
        size = int(round(size * total))
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 0 < size < total:
        raise UserError(f"{what} {size!r} must be a count between 1 and {total - 1} "
                        f"(or a fraction in (0, 1)) for {total} training images")
    return int(size)


def split_holdout(dataset: Dataset, val_size: int | float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Split the TRAINING images into (train_idx, val_idx), stratified by class, fixed by ``seed``.

    ``val_size`` is a count, or a fraction of the training images. Both index tensors are
    sorted and disjoint and together cover every training image.
    """
    n = len(dataset.train_y)
    k = _count(val_size, n, "val_size")
    order = _stratified_order(dataset.train_y, torch.Generator().manual_seed(seed))
    return torch.sort(order[k:]).values, torch.sort(order[:k]).values


# ---------------------------------------------------------------- resolution and batches

def resized(dataset: Dataset, split: str, resolution: int) -> torch.Tensor:
    """All images of ``split`` ("train" or "test") at ``resolution`` x ``resolution``, uint8.

    Computed once per resolution (bilinear, antialiased when shrinking) and cached on the
    data set; uint8 keeps 60K images at 32x32 in 60 MB instead of 240 MB.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise UserError(f"resolution must be a positive integer, got {resolution!r}")
    key = ("resized", split, resolution)
    if key not in dataset._cache:
        x = dataset.train_x if split == "train" else dataset.test_x
        if tuple(x.shape[-2:]) == (resolution, resolution):
            out = x
        else:
            out = torch.empty((len(x), x.shape[1], resolution, resolution), dtype=torch.uint8)
            for i in range(0, len(x), _CHUNK):
                chunk = F.interpolate(x[i:i + _CHUNK].float(), size=(resolution, resolution),
                                      mode="bilinear", align_corners=False, antialias=True)
                out[i:i + _CHUNK] = chunk.round_().clamp_(0, 255).to(torch.uint8)
        dataset._cache[key] = out
    return dataset._cache[key]


def channel_stats(dataset: Dataset, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (in [0, 1] units) of all training images at ``resolution``.

    Taken over the whole training split (held-out validation images included, test never):
    that way a model's input normalization depends only on the data set and resolution,
    not on the holdout settings, so weights carry over between runs that differ in those.
    """
    key = ("stats", resolution)
    if key not in dataset._cache:
        x = resized(dataset, "train", resolution)
        c = x.shape[1]
        total = torch.zeros(c, dtype=torch.float64)
        total_sq = torch.zeros(c, dtype=torch.float64)
        for i in range(0, len(x), _CHUNK):
            chunk = x[i:i + _CHUNK].double().transpose(0, 1).reshape(c, -1)
            total += chunk.sum(1)
            total_sq += (chunk * chunk).sum(1)
        count = x.numel() / c
        mean = total / count
        std = (total_sq / count - mean * mean).clamp_min(0).sqrt()
        dataset._cache[key] = ((mean / 255).float(), (std / 255).clamp_min(1e-3).float())
    return dataset._cache[key]


@dataclass(eq=False)
class Split:
    """A subset of one split at one resolution; yields normalized float batches.

    ``images`` is the whole cached tensor and ``indices`` selects the subset, so making a
    Split copies nothing.
    """

    images: torch.Tensor = field(repr=False)   # uint8 (N, C, R, R)
    labels: torch.Tensor = field(repr=False)   # int64 (N,)
    indices: torch.Tensor = field(repr=False)  # int64, the subset
    mean: torch.Tensor                         # (C,), [0, 1] units
    std: torch.Tensor

    def __post_init__(self):
        # x_norm = (x/255 - mean)/std = x*scale + shift, one fused op per batch
        self._scale = (1.0 / (255.0 * self.std)).view(1, -1, 1, 1)
        self._shift = (-self.mean / self.std).view(1, -1, 1, 1)

    def __len__(self) -> int:
        return len(self.indices)

    def batch(self, positions: torch.Tensor, *, flip_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalized images and labels at ``positions`` (0..len-1) of this subset."""
        idx = self.indices[positions]
        x = torch.addcmul(self._shift, self.images[idx].float(), self._scale)
        if flip_mask is not None and flip_mask.any():
            x[flip_mask] = x[flip_mask].flip(-1)
        return x, self.labels[idx]

    def batches(self, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None,
                flip: bool = False, drop_last: bool = False, limit: int | None = None
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One pass over the subset (at most ``limit`` batches)."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        stop = n - n % batch_size if drop_last else n
        for b, i in enumerate(range(0, stop, batch_size)):
            if limit is not None and b >= limit:
                return
            pos = order[i:i + batch_size]
            mask = torch.rand(len(pos), generator=generator) < 0.5 if flip else None
            yield self.batch(pos, flip_mask=mask)

    def stream(self, batch_size: int, *, generator: torch.Generator, flip: bool = False
               ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Endless shuffled full batches, reshuffled every epoch. A ragged last batch is
        dropped: a tiny batch would give BatchNorm noisy statistics."""
        if len(self) < batch_size:
            raise UserError(f"batch size {batch_size} exceeds the {len(self)} training images")
        while True:
            yield from self.batches(batch_size, shuffle=True, generator=generator, flip=flip, drop_last=True)


def batch_positions(n: int, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """Positions of step's batch: epoch e is a permutation drawn from (seed, e); a ragged end is dropped."""
    per_epoch = n // batch_size
    epoch, b = divmod(step, per_epoch)
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)[b * batch_size:(b + 1) * batch_size]


def search_splits(dataset: Dataset, *, resolution: int, val_size: int | float, split_seed: int = 0,
                  max_train_images: int | None = None) -> tuple[Split, Split]:
    """The (train, val) subsets the search trains and scores on, both from training images.

    ``max_train_images`` caps the train subset to a fixed, stratified sample of it.
    """
    train_idx, val_idx = split_holdout(dataset, val_size, split_seed)
    if max_train_images is not None and max_train_images < len(train_idx):
        if max_train_images < 1:
            raise UserError(f"max_train_images must be positive, got {max_train_images}")
        # a different stream than the holdout's, still fixed by split_seed
        g = torch.Generator().manual_seed(split_seed + 0x5EED)
        keep = _stratified_order(dataset.train_y[train_idx], g)[:max_train_images]
        train_idx = torch.sort(train_idx[keep]).values
    images = resized(dataset, "train", resolution)
    mean, std = channel_stats(dataset, resolution)
    return (Split(images, dataset.train_y, train_idx, mean, std),
            Split(images, dataset.train_y, val_idx, mean, std))


def test_split(dataset: Dataset, *, resolution: int) -> Split:
    """The test images, normalized like the training images. Final reports only."""
    if len(dataset.test_y) == 0:
        raise UserError(f"data set {dataset.source or dataset.name} has no test images")
    mean, std = channel_stats(dataset, resolution)
    return Split(resized(dataset, "test", resolution), dataset.test_y,
                 torch.arange(len(dataset.test_y)), mean, std)


test_split.__test__ = False  # not a pytest test when imported into a test module
