"""interpolate: error and loss of Θ(α) on both splits, all α in one batched pass -> data/interpolation.json."""
import json

import torch

from lmc import connectivity, data, models
from lmc.io import write_text_atomic
from lmc.spec import load_params
from lmc.stage import entry
from stages.train import TWIN_PATHS

OUT_PATH = "data/interpolation.json"


@entry
def main() -> None:
    spec = load_params()
    a, b = (models.load_checkpoint(p, stage="train") for p in TWIN_PATHS.values())
    status = a.meta["status"]
    alphas = connectivity.alpha_grid(spec.alphas)
    curves = {"alpha": alphas.tolist(), "status": status}
    if status == "ok":
        stacked = connectivity.interpolate_states(a.model.state_dict(), b.model.state_dict(), alphas)
        for split, path in data.split_paths().items():
            s = data.read_split(path)
            err, loss = connectivity.evaluate_stack(a.model, stacked, torch.from_numpy(s.images),
                                                    torch.from_numpy(s.labels), spec.dataset)
            curves[f"{split}_error"], curves[f"{split}_loss"] = err.tolist(), loss.tolist()
    write_text_atomic(OUT_PATH, json.dumps(curves, indent=1) + "\n")


if __name__ == "__main__":
    main()
