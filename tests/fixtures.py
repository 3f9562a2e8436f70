"""Small datasets written in each real dataset's on-disk format, for the readers to parse as if real.

Each writer returns the (train, test) Splits it wrote, for exact comparison.
"""
from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np

from lmc.data import Split


def random_split(n: int, shape, classes: int, seed: int) -> Split:
    rng = np.random.default_rng(seed)
    return Split(rng.integers(0, 256, (n, *shape), dtype=np.uint8), rng.integers(0, classes, n).astype(np.int64))


def write_idx(path: Path, array: np.ndarray) -> None:
    """The MNIST idx format: magic (0, 0, dtype 0x08 = ubyte, ndim), big-endian int32 sizes, raw bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(root: Path, n_train=40, n_test=20) -> tuple[Split, Split]:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    splits = random_split(n_train, (28, 28, 1), 10, 1), random_split(n_test, (28, 28, 1), 10, 2)
    for prefix, s in zip(("train", "t10k"), splits):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", s.images[..., 0])
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", s.labels)
    return splits


def _cifar_rows(images: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) -> (N, 3072): each row is the red, then green, then blue plane, row-major."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


def _pickle(path: Path, obj: dict) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=2))


def write_cifar10(root: Path, n_train=40, n_test=20) -> tuple[Split, Split]:
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    train, test = random_split(n_train, (32, 32, 3), 10, 3), random_split(n_test, (32, 32, 3), 10, 4)
    for i, part in enumerate(np.array_split(np.arange(n_train), 5), 1):
        _pickle(base / f"data_batch_{i}", {"batch_label": f"training batch {i} of 5",
                                           "labels": train.labels[part].tolist(),
                                           "data": _cifar_rows(train.images[part]),
                                           "filenames": [f"img_{j}.png" for j in part]})
    _pickle(base / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": test.labels.tolist(),
                                  "data": _cifar_rows(test.images), "filenames": [f"t_{j}.png" for j in range(n_test)]})
    _pickle(base / "batches.meta", {"label_names": [f"class{c}" for c in range(10)], "num_cases_per_batch": 8,
                                    "num_vis": 3072})
    return train, test


def write_cifar100(root: Path, n_train=40, n_test=20) -> tuple[Split, Split]:
    base = root / "cifar-100-python"
    base.mkdir(parents=True)
    train, test = random_split(n_train, (32, 32, 3), 100, 5), random_split(n_test, (32, 32, 3), 100, 6)
    for name, s in (("train", train), ("test", test)):
        _pickle(base / name, {"batch_label": name, "fine_labels": s.labels.tolist(),
                              "coarse_labels": (s.labels // 5).tolist(), "data": _cifar_rows(s.images),
                              "filenames": [f"{name}_{j}.png" for j in range(len(s.labels))]})
    _pickle(base / "meta", {"fine_label_names": [f"fine{c}" for c in range(100)],
                            "coarse_label_names": [f"coarse{c}" for c in range(20)]})
    return train, test


TINY_WNIDS = ["n01443537", "n02094433", "n09999999"]


def write_tinyimagenet(root: Path, per_class=4, n_val=6) -> tuple[Split, Split]:
    """The extracted tiny-imagenet-200 tree; images are JPEGs, so the Splits returned hold what a JPEG
    decoder reads back from the written files (the reference the reader must match exactly)."""
    from PIL import Image

    base = root / "tiny-imagenet-200"
    rng = np.random.default_rng(7)
    (base / "val" / "images").mkdir(parents=True)
    (base / "test" / "images").mkdir(parents=True)  # unlabeled in the real set: never read
    (base / "wnids.txt").write_text("\n".join(reversed(TINY_WNIDS)) + "\n")  # not sorted on disk
    (base / "words.txt").write_text("".join(f"{w}\tthing {w}\n" for w in TINY_WNIDS))

    def save(path: Path, gray: bool) -> np.ndarray:
        pixels = rng.integers(0, 256, (64, 64) if gray else (64, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path, format="JPEG", quality=90)  # a few real images are grayscale
        return np.asarray(Image.open(path).convert("RGB"))

    train_images, train_labels = [], []
    for label, wnid in enumerate(sorted(TINY_WNIDS)):
        folder = base / "train" / wnid / "images"
        folder.mkdir(parents=True)
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
        for i in range(per_class):
            train_images.append(save(folder / f"{wnid}_{i}.JPEG", gray=(i == 1)))
            train_labels.append(label)
    val_images, val_labels, lines = [], [], []
    for i in range(n_val):
        label = int(rng.integers(0, len(TINY_WNIDS)))
        val_images.append(save(base / "val" / "images" / f"val_{i}.JPEG", gray=False))
        val_labels.append(label)
        lines.append(f"val_{i}.JPEG\t{sorted(TINY_WNIDS)[label]}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(reversed(lines)) + "\n")
    return (Split(np.stack(train_images), np.array(train_labels)),
            Split(np.stack(val_images), np.array(val_labels)))


WRITERS = {"mnist": write_mnist, "cifar10": write_cifar10, "cifar100": write_cifar100,
           "tinyimagenet": write_tinyimagenet}
