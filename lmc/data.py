"""Datasets as FFCV .beton files: writing them, and reading them as seeded twin streams or tensors.

Each record holds the raw uint8 image (H, W, C), its integer label and its index in the split.
The index lets augmentation be a pure function of (seed, epoch, sample), whatever the batching.
Normalization happens in torch (`normalize`), identically for every model.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import seeds
from .io import atomic_path
from .paths import repro
from .spec import DATASETS

# Per-channel mean and std of the training pixels in [0, 1] (the full datasets' usual values; mnist5k
# uses MNIST's so that both standardize alike).
NORMALIZATION = {
    "mnist5k": ((0.1307,), (0.3081,)),
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "tinyimagenet": ((0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262)),
}


class DataError(RuntimeError):
    """A missing or unreadable dataset file; the message names the file and the fix."""


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # (N, H, W, C) uint8
    labels: np.ndarray  # (N,) int64


class _Records:
    """The indexed dataset FFCV's writer reads: (image, label, index) tuples."""

    def __init__(self, split: Split):
        self.split = split

    def __len__(self) -> int:
        return len(self.split.labels)

    def __getitem__(self, i: int):
        return self.split.images[i], int(self.split.labels[i]), i


class _WriterProgress:
    """Stands in for FFCV's writer's own tqdm bar, which it shows even off a terminal: forwards its counts to
    `progress` (if any) and draws nothing itself."""

    def __init__(self, progress):
        self.progress = progress

    def __call__(self, *args, **kwargs):  # FFCV calls tqdm(total=n)
        return self

    def update(self, n: int = 1) -> None:
        if self.progress is not None:
            self.progress.update(n)

    def close(self) -> None:
        pass


def write_beton(split: Split, path: str | Path, progress=None) -> None:
    """Write `split` to `path` atomically: a crash leaves no file under the final name. `progress` (a tqdm, or
    anything with update(n)) advances by one per record written."""
    from unittest import mock

    import ffcv.writer
    from ffcv.fields import IntField, NDArrayField
    from ffcv.writer import DatasetWriter

    fields = {"image": NDArrayField(np.dtype("uint8"), split.images.shape[1:]),
              "label": IntField(), "index": IntField()}
    # One worker: page layout, hence the file's bytes, must not depend on scheduling.
    with atomic_path(path) as tmp, mock.patch.object(ffcv.writer, "tqdm", _WriterProgress(progress)):
        DatasetWriter(str(tmp), fields, num_workers=1).from_indexed_dataset(_Records(split))


def _pipelines():
    from ffcv.fields.decoders import IntDecoder, NDArrayDecoder
    from ffcv.transforms import Squeeze, ToTensor

    return {"image": [NDArrayDecoder(), ToTensor()],
            "label": [IntDecoder(), ToTensor(), Squeeze(-1)],
            "index": [IntDecoder(), ToTensor(), Squeeze(-1)]}


def _prepare(path: Path, force: bool = False) -> str:
    """The command that builds the .beton at `path`: the default pipeline's prepare stage, or a scale's copy of
    a study dataset (studies/<scale>/data/<dataset>/)."""
    parts = Path(path).parts
    if len(parts) >= 5 and parts[-5] == "studies" and parts[-3] == "data":
        return repro(f"studies/{parts[-4]}:prepare-{parts[-2]}", force)
    return repro("prepare", force)


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"data: {path} is missing; run `{_prepare(path)}` to build it")


def split_tensors(split: Split | tuple[torch.Tensor, torch.Tensor],
                  device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A Split's images and labels as tensors (sharing the arrays' memory), or an (images, labels) pair as it
    is; moved to `device` when one is given."""
    images, labels = (torch.from_numpy(split.images), torch.from_numpy(split.labels)) if isinstance(split, Split) \
        else split
    return (images, labels) if device is None else (images.to(device), labels.to(device))


class MemoryTwinLoader:
    """A split held in memory as tensors, batched in `seeds.epoch_order(order_seed, epoch, n)` order.

    The k-th iteration is epoch k; each batch is (uint8 images (B, H, W, C), int labels, int sample
    index), exactly the batches FFCV's loader gives in that order (`ffcv_twin_loader`, tested), without
    its per-batch decode and thread hand-off, which cost up to a third of a training step here (see
    reports/benchmarks.md). `split` may also be `split_tensors(...)` on a GPU, shared by several loaders:
    the batches are then gathered there (the sample indices stay on the CPU), with no copy per step.
    """

    def __init__(self, split: Split | tuple[torch.Tensor, torch.Tensor], batch_size: int, order_seed: int):
        self.images, self.labels = split_tensors(split)
        self.batch_size, self.order_seed, self.epoch = batch_size, order_seed, 0

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def __iter__(self):
        for index, sample_index in self.index_batches():
            yield self.images[index], self.labels[index], sample_index

    def index_batches(self):
        """This epoch's batches as sample indices only: (on the split's device, on the CPU) per batch."""
        order = torch.from_numpy(seeds.epoch_order(self.order_seed, self.epoch, len(self.labels)))
        on_device = order.to(self.images.device)  # one copy per epoch
        self.epoch += 1
        for start in range(0, len(order), self.batch_size):
            yield on_device[start:start + self.batch_size], order[start:start + self.batch_size]


def twin_loader(path: str | Path, batch_size: int, order_seed: int) -> MemoryTwinLoader:
    """The .beton's records (decoded once by FFCV), batched in the twin's seeded order every epoch."""
    return MemoryTwinLoader(read_split(path), batch_size, order_seed)


def ffcv_twin_loader(path: str | Path, batch_size: int, order_seed: int, workers: int = 1):
    """An FFCV loader streaming the .beton, whose epoch e visits `seeds.epoch_order(order_seed, e, n)`.

    Gives the same batches as `twin_loader`; for splits too large to hold in memory.
    """
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


# The .beton layout `write_split` makes (FFCV's file format version 2, ffcv/types.py): a header, one descriptor
# per field (image: an NDArray of uint8; label and index: ints), one metadata row per sample (the image's file
# offset, the label, the index), then the data pages. read_split reads it with numpy alone.
_HEADER = np.dtype([("version", "<u2"), ("num_fields", "<u2"), ("page_size", "<u4"), ("num_samples", "<u8"),
                    ("alloc_table_ptr", "<u8")], align=True)
_FIELD = np.dtype([("type_id", "<u1"), ("name", ("<u1", 16)), ("arguments", ("<u1", (1024,)))], align=True)
_ROW = np.dtype([("image", "<u8"), ("label", "<i8"), ("index", "<i8")], align=True)
_LAYOUT = [(4, "image"), (1, "label"), (1, "index")]  # FFCV's type ids: 4 NDArrayField, 1 IntField
GATHER = 2 ** 22  # pixels read_split gathers at a time: a 32 MB index array, whatever the dataset


def read_split(path: str | Path, dataset: str | None = None) -> Split:
    """All records of a .beton file, in stored order, read straight from the file: no FFCV loader to start
    (its compiled pipeline costs seconds, where this costs milliseconds; tests show the same arrays). With
    `dataset`, its images must have that dataset's shape and its labels lie among its classes."""
    path = Path(path)
    _check_file(path)
    try:
        header = np.fromfile(path, _HEADER, count=1)[0]
        fields = np.fromfile(path, _FIELD, count=int(header["num_fields"]), offset=_HEADER.itemsize)
        layout = [(int(f["type_id"]), f["name"].tobytes().rstrip(b"\0").decode()) for f in fields]
        if header["version"] != 2 or layout != _LAYOUT:
            raise ValueError(f"version {header['version']}, fields {layout}")
        args = fields[0]["arguments"]
        shape = tuple(int(d) for d in args[:256].view("<u8") if d)  # NDArrayField: 32 dims, 0-padded
        rows = np.fromfile(path, _ROW, count=int(header["num_samples"]),
                           offset=_HEADER.itemsize + fields.nbytes)
        n = int(header["num_samples"])
        if len(rows) != n or path.stat().st_size != header["alloc_table_ptr"] + 24 * n:  # one page entry a sample
            raise ValueError("truncated")
        size = int(np.prod(shape))
        pixels, offsets = np.memmap(path, np.uint8, mode="r"), rows["image"].astype(np.int64)
        images = np.empty((n, size), np.uint8)
        chunk = max(1, GATHER // size)  # samples gathered at a time
        for start in range(0, n, chunk):
            images[start:start + chunk] = pixels[offsets[start:start + chunk, None] + np.arange(size)]
        images = images.reshape(-1, *shape)
    except Exception as err:  # a damaged or foreign file
        raise DataError(f"data: {path} is unreadable ({type(err).__name__}); "
                        f"rerun `{_prepare(path, force=True)}` to rebuild it") from None
    labels = rows["label"].astype(np.int64)
    if dataset is not None:
        want = DATASETS[dataset]
        low, high = (int(labels.min()), int(labels.max())) if n else (0, 0)
        if images.shape[1:] != want["shape"] or low < 0 or high >= want["classes"]:
            held, wanted = ("×".join(map(str, shape)) for shape in (images.shape[1:], want["shape"]))
            raise DataError(f"data: {path} holds {held} images labelled {low}–{high}, not {dataset}'s {wanted} "
                            f"images of {want['classes']} classes; rerun `{_prepare(path, force=True)}` to rebuild it")
    return Split(images, labels)


def read_split_with_ffcv(path: str | Path) -> Split:
    """read_split through FFCV's own loader: the reference read_split is tested against."""
    from ffcv.loader import Loader, OrderOption

    path = Path(path)
    _check_file(path)
    threads = torch.get_num_threads()  # FFCV sets torch's thread count to its worker count: restored below
    try:
        loader = Loader(str(path), batch_size=1000, num_workers=1, order=OrderOption.SEQUENTIAL,
                        os_cache=True, drop_last=False, pipelines=_pipelines())
        images, labels = [], []
        for image, label, _ in loader:
            images.append(image.numpy().copy())
            labels.append(label.numpy().astype(np.int64))
    finally:
        torch.set_num_threads(threads)
    return Split(np.concatenate(images), np.concatenate(labels))


@functools.lru_cache(maxsize=None)
def _channel_stats(dataset: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # Made once per device: a fresh tensor per batch would be a host-to-GPU copy (and a sync) per step.
    mean, std = NORMALIZATION[dataset]
    return (torch.tensor(mean, device=device).view(1, -1, 1, 1), torch.tensor(std, device=device).view(1, -1, 1, 1))


def normalize(images: torch.Tensor, dataset: str) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float32 (N, C, H, W), standardized per channel."""
    mean, std = _channel_stats(dataset, images.device)
    x = images.permute(0, 3, 1, 2).float().div_(255)
    return (x - mean) / std

