"""init: the shared initialization Θ0 -> data/init.pt."""
from lmc import models
from lmc.spec import load_params
from lmc.stage import entry

INIT_PATH = "data/init.pt"


@entry
def main() -> None:
    spec = load_params()
    model = models.init_model(spec)
    models.save_checkpoint(INIT_PATH, models.arch_from_spec(spec), model.state_dict(), init_seed=spec.init_seed)


if __name__ == "__main__":
    main()
