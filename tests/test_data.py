import hashlib

import numpy as np
import pytest
import torch

from lmc import data, seeds
from .fixtures import Counter, run_stage_stderr, shows_a_bar, small_split



def test_mnist5k_split_is_stratified_disjoint_and_shuffled(mnist5k):
    train, test = mnist5k
    assert len(train.labels) == 4000 and len(test.labels) == 1000
    assert np.bincount(test.labels).tolist() == [100] * 10
    assert np.bincount(train.labels).tolist() == [400] * 10
    assert train.images.dtype == np.uint8 and train.images.shape[1:] == (28, 28, 1)
    assert not np.array_equal(np.sort(train.labels[:100]), train.labels[:100])  # not sorted by label
    # no digit image appears in both splits
    flat = lambda s: {hashlib.md5(im.tobytes()).hexdigest() for im in s.images}
    assert not flat(train) & flat(test)


def test_beton_round_trips_pixels_and_labels_exactly(betons, mnist5k):
    for split, path in zip(mnist5k, betons.values()):
        back = data.read_split(path)
        assert np.array_equal(back.images, split.images) and np.array_equal(back.labels, split.labels)


def test_beton_bytes_are_reproducible(tmp_path):
    s = small_split()
    data.write_beton(s, tmp_path / "a.beton")
    data.write_beton(s, tmp_path / "b.beton")
    assert (tmp_path / "a.beton").read_bytes() == (tmp_path / "b.beton").read_bytes()
    assert not list(tmp_path.glob("*.partial"))


def test_write_beton_counts_every_record_and_draws_nothing_itself(tmp_path, capfd):
    s, counter = small_split(n=250), Counter()
    data.write_beton(s, tmp_path / "counted.beton", progress=counter)
    data.write_beton(s, tmp_path / "plain.beton")
    assert counter.n == 250
    assert (tmp_path / "counted.beton").read_bytes() == (tmp_path / "plain.beton").read_bytes()
    assert capfd.readouterr().err == ""  # FFCV's writer's own bar (drawn even off a terminal) is gone


def test_prepare_shows_a_bar_on_a_terminal_and_nothing_off_one(tmp_path):
    (tmp_path / "params.yaml").write_text("dataset: mnist5k\n")
    status, stderr = run_stage_stderr(tmp_path, "prepare", tty=True)
    assert status == 0 and shows_a_bar(stderr) and "100%|" in stderr, stderr
    on_terminal = (tmp_path / "data/train.beton").read_bytes()
    status, stderr = run_stage_stderr(tmp_path, "prepare", tty=False)
    assert status == 0 and stderr == ""
    assert (tmp_path / "data/train.beton").read_bytes() == on_terminal


def epoch_indices(loader):
    return np.concatenate([index.numpy().copy() for _, _, index in loader])


def test_twin_loader_follows_the_seeded_order_every_epoch(betons):
    for loader in (data.twin_loader(betons["train"], 512, order_seed=43),
                   data.ffcv_twin_loader(betons["train"], 512, order_seed=43, workers=2)):
        for epoch in range(3):
            assert np.array_equal(epoch_indices(loader), seeds.epoch_order(43, epoch, 4000))


def test_memory_loader_gives_exactly_the_ffcv_loaders_batches(betons):
    memory = data.twin_loader(betons["train"], 300, order_seed=7)
    streamed = data.ffcv_twin_loader(betons["train"], 300, order_seed=7)
    assert len(memory) == len(streamed) == 14
    for _ in range(2):
        for ours, theirs in zip(memory, streamed, strict=True):
            for a, b in zip(ours, theirs):
                assert a.shape == b.shape and torch.equal(a.long(), b.long())
            assert ours[0].dtype == theirs[0].dtype == torch.uint8


def test_loaders_can_share_one_copy_of_the_split(mnist5k):
    shared = data.split_tensors(mnist5k[0])
    a, b = (data.MemoryTwinLoader(shared, 300, order_seed=s) for s in (7, 8))
    assert a.images.data_ptr() == b.images.data_ptr() == mnist5k[0].images.ctypes.data  # no copy at all
    own = data.MemoryTwinLoader(mnist5k[0], 300, order_seed=7)
    for ours, theirs in zip(a, own, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(ours, theirs))


def test_twins_see_different_orders_every_epoch_and_reruns_match(betons):
    a = data.twin_loader(betons["train"], 1000, order_seed=43)
    b = data.twin_loader(betons["train"], 1000, order_seed=44)  # adjacent seeds: the seed + epoch trap
    a_again = data.twin_loader(betons["train"], 1000, order_seed=43)
    orders_a = [epoch_indices(a) for _ in range(4)]
    orders_b = [epoch_indices(b) for _ in range(4)]
    assert all(np.array_equal(x, y) for x, y in zip(orders_a, [epoch_indices(a_again) for _ in range(4)]))
    for i in range(4):
        for j in range(4):
            assert not np.array_equal(orders_a[i], orders_b[j])


def test_loader_batches_carry_matching_images_and_labels(betons, mnist5k):
    images, labels, index = next(iter(data.twin_loader(betons["train"], 100, order_seed=1)))
    idx = index.numpy()
    assert np.array_equal(images.numpy(), mnist5k[0].images[idx])
    assert np.array_equal(labels.numpy(), mnist5k[0].labels[idx])


def test_normalize_gives_standardized_channels_first(mnist5k):
    x = data.normalize(torch.from_numpy(mnist5k[0].images), "mnist5k")
    assert x.shape == (4000, 1, 28, 28) and x.dtype == torch.float32
    assert abs(x.mean().item()) < 0.05 and abs(x.std().item() - 1) < 0.05


def test_missing_beton_names_the_file_and_the_fix(tmp_path):
    with pytest.raises(data.DataError, match=r"train.beton is missing; run `dvc repro prepare`"):
        data.read_split(tmp_path / "train.beton")
    with pytest.raises(data.DataError, match="missing"):
        data.twin_loader(tmp_path / "train.beton", 10, 0)


@pytest.mark.parametrize("keep", [200, 4000, -100])  # cut in: the fields, the samples' rows, the page table
def test_truncated_beton_is_reported_as_unreadable(tmp_path, keep):
    path = tmp_path / "train.beton"
    data.write_beton(small_split(), path)
    path.write_bytes(path.read_bytes()[:keep])
    with pytest.raises(data.DataError, match=r"train.beton is unreadable .*dvc repro -f prepare"):
        data.read_split(path)


def test_a_beton_of_another_dataset_or_with_labels_beyond_its_classes_is_one_line(tmp_path):
    """A whole file that is not the spec's dataset (another image shape, a label no class has) is refused
    when read, before training, not at the first batch that meets it."""
    path = tmp_path / "train.beton"
    split = small_split()
    data.write_beton(split, path)
    assert data.read_split(path, "mnist5k").labels.tolist() == split.labels.tolist()
    with pytest.raises(data.DataError, match=r"holds 28×28×1 images labelled 0–\d, not cifar10's 32×32×3 images "
                                             r"of 10 classes; rerun `dvc repro -f prepare`"):
        data.read_split(path, "cifar10")
    labels = split.labels.copy()
    labels[3] = 77
    data.write_beton(data.Split(split.images, labels), path)
    with pytest.raises(data.DataError, match="labelled 0–77, not mnist5k's 28×28×1 images of 10 classes"):
        data.read_split(path, "mnist5k")
    study = tmp_path / "studies/cpu/data/mnist/train.beton"  # a scale's copy names its own prepare stage
    with pytest.raises(data.DataError, match=r"run `dvc --cd studies/cpu repro prepare-mnist`"):
        data.read_split(study, "mnist5k")


def test_reading_a_beton_directly_gives_what_ffcvs_loader_gives(betons, monkeypatch):
    """read_split parses the file with numpy alone (here in chunks of 1,000 images); FFCV's own loader must read
    the very same arrays."""
    monkeypatch.setattr(data, "GATHER", 1000 * 28 * 28)
    for split in ("train", "test"):
        direct, loaded = data.read_split(betons[split]), data.read_split_with_ffcv(betons[split])
        assert direct.images.dtype == loaded.images.dtype and direct.labels.dtype == loaded.labels.dtype
        assert np.array_equal(direct.images, loaded.images) and np.array_equal(direct.labels, loaded.labels)
