"""init: Θ0 of every twin pair -> data/init/pair<i>.pt (pair 0 from init_seed, the others derived from it)."""
from lmc import models, numerics, paths
from lmc.spec import load_params
from lmc.stage import entry


@entry
def main() -> None:
    spec = load_params()
    numerics.require(spec.numerics)  # Θ0's random draws run ATen kernels too
    for pair in range(spec.pairs):
        model = models.init_model(spec, pair)
        models.save_checkpoint(paths.init(pair), models.arch_from_spec(spec), model.state_dict(),
                               init_seed=spec.pair_seeds(pair)["init"])

    numerics.record(paths.NUMERICS, "init", "cpu")

if __name__ == "__main__":
    main()
