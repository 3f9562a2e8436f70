import json
import socket
from pathlib import Path

import numpy as np
import pytest
import yaml

from lmc import data, datasets

from .fixtures import TINY_WNIDS, WRITERS, run_stage



def assert_same(a: data.Split, b: data.Split) -> None:
    assert a.images.dtype == np.uint8 and a.labels.dtype == np.int64
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_real_formats_read_back_exactly_and_round_trip_through_beton(tmp_path, name):
    written = WRITERS[name](tmp_path / "raw")
    files = datasets.locate(name, tmp_path / "raw", download=False)
    assert files and all(f.is_file() for f in files)
    splits = datasets.read(name, tmp_path / "raw")
    for got, want, split in zip(splits, written, ("train", "test")):
        assert_same(got, want)
        data.write_beton(got, tmp_path / f"{split}.beton")
        assert_same(data.read_split(tmp_path / f"{split}.beton"), want)


def test_tinyimagenet_labels_follow_sorted_wnids_and_grayscale_becomes_rgb(tmp_path):
    train, test = WRITERS["tinyimagenet"](tmp_path)
    got_train, got_test = datasets.read("tinyimagenet", tmp_path)
    assert got_train.images.shape[1:] == (64, 64, 3) and got_train.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    gray = got_train.images[1]
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 0], gray[..., 2])


def test_tinyimagenet_with_a_class_short_of_images_is_refused(tmp_path):
    WRITERS["tinyimagenet"](tmp_path)
    images = sorted((tmp_path / "tiny-imagenet-200" / "train" / TINY_WNIDS[1] / "images").glob("*.JPEG"))
    for path in images:
        path.unlink()
    with pytest.raises(datasets.DataError, match=rf"^dataset tinyimagenet: .*train/{TINY_WNIDS[1]}/images holds 0 "
                                                 r"images, other classes 4\); replace it"):
        datasets.read("tinyimagenet", tmp_path)


def workdir(tmp_path: Path, **params) -> Path:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"download": False, **params}))
    return tmp_path


@pytest.mark.parametrize("name", ["mnist5k", *sorted(WRITERS)])
def test_every_dataset_prepares_through_the_stages(tmp_path, name):
    params = {"dataset": name, "batch_size": 4}
    if name != "mnist5k":
        written = WRITERS[name](tmp_path / "raw")
        params["data_root"] = str(tmp_path / "raw")
    cwd = workdir(tmp_path, **params)
    for stage in ("source", "prepare"):
        proc = run_stage(cwd, stage)
        assert proc.returncode == 0, proc.stderr
    source = json.loads((cwd / "data/source.json").read_text())
    assert source["dataset"] == name and source["files"] >= 1
    if name != "mnist5k":
        for split, want in zip(("train", "test"), written):
            assert_same(data.read_split(cwd / f"data/{split}.beton"), want)


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_missing_dataset_without_download_is_one_line_naming_where_and_how(tmp_path, name):
    cwd = workdir(tmp_path, dataset=name, data_root=str(tmp_path / "empty"))
    proc = run_stage(cwd, "source")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: dataset {name}: {tmp_path / 'empty'}/") and "not found" in lines[0]
    assert "data_root" in lines[0]
    assert sorted(p.name for p in cwd.iterdir()) == ["params.yaml"]


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_missing_dataset_with_no_network_says_the_download_failed(tmp_path, monkeypatch, name):
    def offline(*args, **kwargs):
        raise OSError("network is unreachable")
    monkeypatch.setattr(socket, "getaddrinfo", offline)
    monkeypatch.setattr(socket.socket, "connect", offline)
    with pytest.raises(data.DataError, match=rf"dataset {name}: .* not found and the download failed .*data_root"):
        datasets.locate(name, tmp_path, download=True)


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGE = {  # dataset -> the fixture file to truncate
    "mnist": "MNIST/raw/train-images-idx3-ubyte",
    "cifar10": "cifar-10-batches-py/data_batch_3",
    "cifar100": "cifar-100-python/test",
    "tinyimagenet": "tiny-imagenet-200/val/images/val_2.JPEG",
}


@pytest.mark.parametrize("name", sorted(DAMAGE))
def test_truncated_source_fails_clearly_and_leaves_no_beton(tmp_path, name):
    WRITERS[name](tmp_path / "raw")
    truncate(tmp_path / "raw" / DAMAGE[name])
    cwd = workdir(tmp_path, dataset=name, data_root=str(tmp_path / "raw"))
    proc = run_stage(cwd, "prepare")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: dataset {name}: {tmp_path / 'raw' / DAMAGE[name]} is damaged")
    assert not (cwd / "data").exists() or not list((cwd / "data").iterdir())


def test_labels_out_of_range_are_refused(tmp_path):
    import pickle

    WRITERS["cifar10"](tmp_path)
    batch = tmp_path / "cifar-10-batches-py/test_batch"
    content = pickle.loads(batch.read_bytes())
    content["labels"][0] = 10
    batch.write_bytes(pickle.dumps(content, protocol=2))
    with pytest.raises(data.DataError, match=r"test split .* malformed \(labels outside 0..9\)"):
        datasets.read("cifar10", tmp_path)


def test_fingerprint_follows_content_not_location(tmp_path):
    for root in ("x", "y"):
        WRITERS["cifar10"](tmp_path / root)
    prints = [datasets.fingerprint("cifar10", tmp_path / r, datasets.locate("cifar10", tmp_path / r, False))
              for r in ("x", "y")]
    assert prints[0] == prints[1]
    batch = tmp_path / "y/cifar-10-batches-py/data_batch_1"
    batch.write_bytes(batch.read_bytes()[:-1] + b"\x00")
    changed = datasets.fingerprint("cifar10", tmp_path / "y", datasets.locate("cifar10", tmp_path / "y", False))
    assert changed["sha256"] != prints[0]["sha256"] and changed["bytes"] == prints[0]["bytes"]
