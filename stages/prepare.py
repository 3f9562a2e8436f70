"""prepare: the dataset -> data/train.beton and data/test.beton."""
from lmc import data, paths
from lmc.spec import load_params
from lmc.stage import entry


@entry
def main() -> None:
    spec = load_params()
    train, test = data.LOADERS[spec.dataset]()
    data.write_beton(train, paths.BETONS["train"])
    data.write_beton(test, paths.BETONS["test"])


if __name__ == "__main__":
    main()
