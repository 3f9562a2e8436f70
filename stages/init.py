"""init: the shared initialization Θ0 -> data/init.pt."""
from lmc import models, paths
from lmc.spec import load_params
from lmc.stage import entry


@entry
def main() -> None:
    spec = load_params()
    model = models.init_model(spec)
    models.save_checkpoint(paths.INIT, models.arch_from_spec(spec), model.state_dict(), init_seed=spec.init_seed)


if __name__ == "__main__":
    main()
