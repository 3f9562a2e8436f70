"""check: validate the whole params.yaml, including keys no other stage reads."""
from lmc.spec import load_params
from lmc.stage import entry


@entry
def main() -> None:
    load_params()


if __name__ == "__main__":
    main()
