"""prepare: the located dataset -> data/train.beton and data/test.beton (uint8 images, labels, index).

With `--study-dataset NAME --scale S` it serves the studies instead (studies/S/data/NAME/).
"""
from tqdm import tqdm

from lmc import data, datasets, studies
from lmc.spec import load_params
from lmc.stage import entry


@entry
def main() -> None:
    spec = load_params()
    dataset, out = studies.stage_target(spec)
    train, test = datasets.read(dataset, spec.data_root)  # both read and checked before any write
    with tqdm(total=len(train.labels) + len(test.labels), desc="prepare: write .beton", unit="image",
              disable=None) as bar:
        data.write_beton(train, out["train"], progress=bar)
        data.write_beton(test, out["test"], progress=bar)


if __name__ == "__main__":
    main()
