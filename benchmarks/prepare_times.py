"""Prepare time (read + check + write both .beton files) and .beton sizes, for the bundled mnist5k and for
the test fixtures written in each dataset's real format.

    python benchmarks/prepare_times.py   # output kept in benchmarks/prepare_times.txt
"""
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.fixtures, benchmarks.header

from benchmarks.header import header  # noqa: E402
from lmc import data, datasets  # noqa: E402
from tests.fixtures import WRITERS  # noqa: E402


def prepare(name: str, root: Path, out: Path) -> str:
    start = time.perf_counter()
    splits = datasets.read(name, root)
    sizes = []
    for split_name, split in zip(("train", "test"), splits):
        path = out / f"{name}-{split_name}.beton"
        data.write_beton(split, path)
        sizes.append(f"{split_name} {len(split.labels)} images {path.stat().st_size:,} B")
    return f"{name:13s} {time.perf_counter() - start:6.2f} s   " + ", ".join(sizes)


def main() -> None:
    print(header())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print(prepare("mnist5k", tmp, tmp) + "   (bundled)")
        for name, write in WRITERS.items():
            write(tmp / name)
            print(prepare(name, tmp / name, tmp) + "   (fixture)")


if __name__ == "__main__":
    main()
