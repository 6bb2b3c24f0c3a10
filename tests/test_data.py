"""Data loading (IDX, CIFAR-10, image folders), the held-out split, resizing and batches."""

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from nas import data as nd
from nas.data import Dataset, load_dataset, read_idx, resized, search_splits, split_holdout, test_split
from search_space.errors import UserError


def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    assert array.dtype == np.uint8
    raw = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


def tiny_idx(folder: Path, gz: bool, n_train=20, n_test=6, names=("train", "t10k"), sep="-") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in zip(names, (n_train, n_test)):
        suffix = ".gz" if gz else ""
        write_idx(folder / f"{prefix}-images{sep}idx3-ubyte{suffix}",
                  rng.integers(0, 256, (n, 5, 7), dtype=np.uint8), gz)
        write_idx(folder / f"{prefix}-labels{sep}idx1-ubyte{suffix}", (np.arange(n) % 3).astype(np.uint8), gz)


@pytest.fixture(scope="module")
def fashion() -> Dataset:
    if not Path(nd.DEFAULT_PATH).is_dir():
        pytest.skip("needs the Debian package dataset-fashion-mnist")
    return load_dataset(None)


# ---------------------------------------------------------------- IDX

def test_real_fashion_mnist(fashion):
    assert fashion.name == "fashion-mnist"
    assert fashion.train_x.shape == (60000, 1, 28, 28) and fashion.train_x.dtype == torch.uint8
    assert fashion.test_x.shape == (10000, 1, 28, 28)
    assert sorted(fashion.train_y.unique().tolist()) == list(range(10))
    assert torch.bincount(fashion.train_y).tolist() == [6000] * 10
    assert fashion.num_classes == 10 and fashion.in_channels == 1
    assert fashion.class_names[0] == "T-shirt/top"
    assert load_dataset("fashion-mnist").train_y.equal(fashion.train_y)


@pytest.mark.parametrize("gz", [True, False])
def test_tiny_idx(tmp_path, gz):
    tiny_idx(tmp_path, gz)
    d = load_dataset(tmp_path)
    assert d.train_x.shape == (20, 1, 5, 7) and d.test_x.shape == (6, 1, 5, 7)
    assert d.train_y.tolist() == [i % 3 for i in range(20)]
    assert d.num_classes == 3 and d.class_names == ["0", "1", "2"]
    raw = read_idx(tmp_path / f"train-images-idx3-ubyte{'.gz' if gz else ''}")
    assert d.train_x[:, 0].numpy().tolist() == raw.tolist()


def test_mnist_style_names(tmp_path):
    tiny_idx(tmp_path, gz=False, names=("train", "test"), sep=".")
    assert load_dataset(tmp_path).test_x.shape == (6, 1, 5, 7)


def test_idx_errors(tmp_path):
    tiny_idx(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(UserError, match="t10k-labels"):
        load_dataset(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x12\x34\x56\x78")
    with pytest.raises(UserError, match="not an IDX file"):
        load_dataset(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(5, np.uint8), gz=False)  # 6 images
    with pytest.raises(UserError, match="6 test images but 5 labels"):
        load_dataset(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 9, 1, 2]))
    with pytest.raises(UserError, match="needs"):
        read_idx(tmp_path / "t10k-labels-idx1-ubyte")


# ---------------------------------------------------------------- CIFAR-10, image folders

def test_cifar10_batches(tmp_path):
    rng = np.random.default_rng(0)
    for name, n in [(f"data_batch_{i}", 4) for i in range(1, 6)] + [("test_batch", 3)]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": [i % 10 for i in range(n)]}
        (tmp_path / name).write_bytes(pickle.dumps(batch))
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    (tmp_path / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}))
    d = load_dataset(tmp_path)
    assert d.train_x.shape == (20, 3, 32, 32) and d.test_x.shape == (3, 3, 32, 32)
    assert d.num_classes == 10 and d.in_channels == 3 and d.class_names[-1] == "truck"
    first = pickle.loads((tmp_path / "data_batch_1").read_bytes())[b"data"][0]
    assert d.train_x[0].flatten().numpy().tolist() == first.tolist()  # CHW row-major, as CIFAR stores it


def write_pngs(root: Path, classes: dict[str, int], mode: str, size=(10, 8)) -> None:
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(1)
    for cls, n in classes.items():
        (root / cls).mkdir(parents=True)
        for i in range(n):
            shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(root / cls / f"{i}.png")


def test_image_folder_single_tree(tmp_path):
    write_pngs(tmp_path, {"cats": 5, "dogs": 5}, "RGB")
    d = load_dataset(tmp_path, image_size=12)
    assert d.class_names == ["cats", "dogs"] and d.in_channels == 3
    assert d.train_x.shape == (8, 3, 12, 12) and d.test_x.shape == (2, 3, 12, 12)
    assert torch.bincount(d.test_y).tolist() == [1, 1]  # the fixed test split is stratified


def test_image_folder_train_test_gray(tmp_path):
    write_pngs(tmp_path / "train", {"a": 3, "b": 2, "c": 2}, "L")
    write_pngs(tmp_path / "test", {"a": 1, "c": 1}, "L")
    d = load_dataset(tmp_path, image_size=6)
    assert d.in_channels == 1 and d.num_classes == 3
    assert d.train_x.shape == (7, 1, 6, 6) and d.test_y.tolist() == [0, 2]


# ---------------------------------------------------------------- bad folders

def test_missing_and_unrecognized_folders(tmp_path, monkeypatch):
    missing = tmp_path / "nope"
    with pytest.raises(UserError, match="nope.*does not exist"):
        load_dataset(missing)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UserError, match=f"unrecognized data set folder {tmp_path}"):
        load_dataset(tmp_path)
    with pytest.raises(UserError, match="not a folder"):
        load_dataset(tmp_path / "notes.txt")
    monkeypatch.setattr(nd, "DEFAULT_PATH", str(missing))
    with pytest.raises(UserError, match="apt-get install dataset-fashion-mnist") as e:
        load_dataset(None)
    assert str(missing) in str(e.value) and "\n" not in str(e.value)


# ---------------------------------------------------------------- holdout split

def test_split_holdout(fashion):
    train, val = split_holdout(fashion, 10000, seed=0)
    assert len(train) == 50000 and len(val) == 10000
    assert not set(train.tolist()) & set(val.tolist())
    assert torch.cat([train, val]).sort().values.equal(torch.arange(60000))  # training images only
    assert torch.bincount(fashion.train_y[val]).tolist() == [1000] * 10   # stratified
    again_train, again_val = split_holdout(fashion, 10000, seed=0)
    assert again_val.equal(val) and again_train.equal(train)
    other = split_holdout(fashion, 10000, seed=1)[1]
    assert not other.equal(val)
    assert len(split_holdout(fashion, 0.25, seed=0)[1]) == 15000


@pytest.mark.parametrize("size", [0, 60000, -3, 1.5, "10"])
def test_split_holdout_bad_size(fashion, size):
    with pytest.raises(UserError, match="val_size"):
        split_holdout(fashion, size, seed=0)


def test_search_splits_never_touch_test(fashion):
    train, val = search_splits(fashion, resolution=16, val_size=2000, split_seed=3, max_train_images=5000)
    assert len(train) == 5000 and len(val) == 2000
    assert train.images is resized(fashion, "train", 16) and val.images is train.images
    assert not set(train.indices.tolist()) & set(val.indices.tolist())
    test = test_split(fashion, resolution=16)
    assert test.images is resized(fashion, "test", 16) and len(test) == 10000


# ---------------------------------------------------------------- resolution and batches

def test_resize_cache_and_normalization(fashion):
    r32 = resized(fashion, "train", 32)
    assert r32.shape == (60000, 1, 32, 32) and r32.dtype == torch.uint8
    assert resized(fashion, "train", 32) is r32
    assert resized(fashion, "train", 28) is fashion.train_x
    train, _ = search_splits(fashion, resolution=32, val_size=10000)
    x, y = next(train.batches(4096, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert x.shape == (4096, 1, 32, 32) and x.dtype == torch.float32
    assert abs(float(x.mean())) < 0.05 and abs(float(x.std()) - 1) < 0.05
    with pytest.raises(UserError, match="resolution"):
        resized(fashion, "train", 0)


def test_batches_deterministic_and_flip(fashion):
    train, _ = search_splits(fashion, resolution=16, val_size=2000)

    def first_batches(seed, flip=False):
        s = train.stream(64, generator=torch.Generator().manual_seed(seed), flip=flip)
        return [next(s) for _ in range(3)]

    a, b, c = first_batches(0), first_batches(0), first_batches(1)
    assert all(xa.equal(xb) and ya.equal(yb) for (xa, ya), (xb, yb) in zip(a, b))
    assert not a[0][1].equal(c[0][1])
    (x, y), (xf, yf) = first_batches(5)[0], first_batches(5, flip=True)[0]
    assert y.equal(yf)
    flipped = [bool(xf[i].equal(x[i].flip(-1))) and not xf[i].equal(x[i]) for i in range(64)]
    assert 10 < sum(flipped) < 54  # about half, and the rest untouched
    full = list(train.batches(1000))
    assert sum(len(yb) for _, yb in full) == len(train)
