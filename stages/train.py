"""train: every twin pair from its Θ0 (after a shared trunk of spawn_step steps), in lockstep
-> data/twins/pair<i>/{a,b}.pt and per-epoch curves."""
import math
import os
import signal
import sys

from dvclive import Live
from tqdm import tqdm

from lmc import data, device, models, numerics, paths
from lmc.io import atomic_dir, write_text_atomic
from lmc.resume import Resume
from lmc.spec import load_params
from lmc.stage import entry
from lmc.train import train_pairs, twin_state

# Fault injection (tests/test_interrupt.py): LMC_TRAIN_FAULT=twins makes the stage SIGKILL itself right after
# it has written its first twin file, as a kill in the middle of writing the twins would.
FAULT_ENV = "LMC_TRAIN_FAULT"


@entry
def main() -> None:
    spec = load_params()
    dev = device.select(spec)  # a missing GPU stops here, before any work
    arch = models.arch_from_spec(spec)
    inits = [models.load_checkpoint(paths.init(pair), stage="init", arch=arch) for pair in range(spec.pairs)]
    train = data.read_split(paths.BETONS["train"], spec.dataset)  # one copy in memory for every twin
    names = [f"{side}{pair}" if spec.pairs > 1 else side for pair in range(spec.pairs) for side in "ab"]
    steps = spec.epochs * spec.steps_per_epoch - spec.spawn_step
    resume = Resume(paths.RESUME_DIR / "train.pt", {"stage": "train", "spec": spec.record()})  # lmc/resume.py
    rows = ["epoch,pair,twin,loss,accuracy"]  # long form: `dvc plots show` overlays every twin, whatever `pairs` is
    with Live(str(paths.TRAIN_LIVE), dvcyaml=False, save_dvc_exp=False, report=None) as live, \
            tqdm(total=steps, desc="train twins", unit="step", disable=None) as bar:
        def log(stats):
            for i, twin in enumerate(names):
                if math.isfinite(stats.loss[i]) and math.isfinite(stats.acc[i]):
                    rows.append(f"{stats.epoch + 1},{i // 2},{'AB'[i % 2]},{stats.loss[i]:.6g},{stats.acc[i]:.6g}")
                for name, value in ((f"loss_{twin}", stats.loss[i]), (f"acc_{twin}", stats.acc[i])):
                    if math.isfinite(value):  # a diverged epoch logs only the flag below
                        live.log_metric(name, value)
            live.log_metric("diverged", int(stats.diverged))
            live.next_step()
            bar.set_postfix_str(f"epoch {stats.epoch + 1} loss {stats.loss[0]:.3f}|{stats.loss[1]:.3f}")
        result = train_pairs(spec, inits[0].model, [c.model.state_dict() for c in inits], train, progress=bar,
                             on_epoch=log, device=dev, resume=resume)
    write_text_atomic(paths.TRAIN_CSV, "\n".join(rows) + "\n")
    if result.status != "ok":
        print(f"train: a twin diverged in epoch {result.diverged_epoch + 1}; "
              f"the report will show this run as unstable", file=sys.stderr)
    with atomic_dir(paths.TWINS_DIR) as twins:  # every twin or none: a kill never leaves a part of the set
        for pair in range(spec.pairs):
            seeds = spec.pair_seeds(pair)
            for side in "ab":
                models.save_checkpoint(twins / paths.twin(pair, side).relative_to(paths.TWINS_DIR), inits[0].arch,
                                       twin_state(result, pair, side), twin=side, pair=pair, status=result.status,
                                       diverged_epoch=result.diverged_epoch, order_seed=seeds[f"order_{side}"],
                                       spawn_step=spec.spawn_step)
                if os.environ.get(FAULT_ENV) == "twins":
                    os.kill(os.getpid(), signal.SIGKILL)
    numerics.record(paths.NUMERICS, "train", spec.device)
    resume.clear()  # the twins are written: the progress that led to them is no longer needed


if __name__ == "__main__":
    main()
