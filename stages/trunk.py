"""trunk: a spawn study's shared trunk, trained once and snapshotted at every spawn_step its cells use
-> studies/<scale>/trunk/<study>/step<k>.pt.

    python -m stages.trunk <study> --scale <scale>
"""
import shutil
import sys

from tqdm import tqdm

from lmc import data, device, models, numerics, studies
from lmc.spec import SpecError
from lmc.stage import entry
from lmc.train import save_snapshot, train_trunks


@entry
def main() -> None:
    args = studies.stage_args("study")
    study, scale = args.study, args.scale
    raw = studies.load(scale)
    spec, steps = studies.trunk_plan(raw, study)
    dev = device.select(spec)  # in the spec's numerics mode before Θ0 is drawn
    dataset = studies.paper_dataset(raw, studies.cells(raw, study)[0])
    split = data.read_split(studies.data_paths(scale, dataset)["train"], spec.dataset)
    inits = [models.init_model(spec, pair).state_dict() for pair in range(spec.pairs)]
    try:
        with tqdm(total=max(steps, default=0), desc=f"trunk {study}", unit="step", disable=None) as bar:
            snapshots = train_trunks(spec, models.build(models.arch_from_spec(spec)), inits, split, steps,
                                     dev, progress=bar)
    except FloatingPointError as err:
        raise SpecError(f"studies: {study}'s shared trunk is unstable ({err}); its cells cannot branch, "
                        f"change the study's settings (a lower lr, warm-up)") from None
    shutil.rmtree(studies.trunk_dir(scale, study), ignore_errors=True)  # DVC removes it too; no stale step stays
    for step, snapshot in snapshots.items():
        save_snapshot(studies.trunk_path(scale, study, step), snapshot, studies.trunk_key(spec))
    numerics.record(studies.numerics_record(scale, f"trunk-{study}"), f"trunk-{study}", spec.device)
    print(f"trunk {study}: {len(steps)} snapshots, steps {steps}", file=sys.stderr)


if __name__ == "__main__":
    main()
