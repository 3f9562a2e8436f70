"""interpolate: error and loss of Θ(α) on both splits, all α in one batched pass -> data/interpolation.json."""
import json

from lmc import api, connectivity, paths
from lmc.io import write_text_atomic
from lmc.device import select as select_device
from lmc.spec import load_params
from lmc.stage import entry


@entry
def main() -> None:
    spec = load_params()
    dev = select_device(spec)
    run = api.load_run()
    curves = {"alpha": connectivity.alpha_grid(spec.alphas).tolist(), "status": run.status}
    if run.status == "ok":
        for split in paths.BETONS:
            c = api.path_curves(run.a, run.b, *api.load_split(split), spec.dataset, spec.alphas,
                                dev)
            curves[f"{split}_error"], curves[f"{split}_loss"] = c["error"], c["loss"]
    write_text_atomic(paths.CURVES, json.dumps(curves, indent=1) + "\n")


if __name__ == "__main__":
    main()
