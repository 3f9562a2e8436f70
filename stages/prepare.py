"""prepare: the dataset -> data/train.beton and data/test.beton."""
from lmc import data
from lmc.spec import load_params
from lmc.stage import entry


@entry
def main() -> None:
    spec = load_params()
    train, test = data.LOADERS[spec.dataset]()
    paths = data.split_paths()
    data.write_beton(train, paths["train"])
    data.write_beton(test, paths["test"])


if __name__ == "__main__":
    main()
