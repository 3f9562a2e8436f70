"""cell: one study cell, a whole twin experiment -> studies/<scale>/out/<study>/<cell>.json.

    python -m stages.cell <study> <cell-id> --scale <scale>
"""
import json
import math
import sys
import time

from tqdm import tqdm

from lmc import api, numerics, paths, studies, studies_dvc, train
from lmc.io import write_text_atomic
from lmc.resume import Resume, cell_file, study_dir
from lmc.spec import SpecError
from lmc.stage import entry


def _finite(value):
    """JSON has no NaN or infinity: a diverged epoch's non-finite loss is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


@entry
def main() -> None:
    args = studies.stage_args("study", "cell_id")
    study, cell_id, scale = args.study, args.cell_id, args.scale
    raw = studies.load(scale)
    dvc_file = studies.dvc_file(scale)
    if not dvc_file.exists() or dvc_file.read_text() != studies_dvc.generate(raw):
        raise SpecError(f"studies: {dvc_file} is stale for {studies.STUDIES_FILE}; "
                        f"run `python -m lmc.studies_dvc`, then repro again")
    cell = studies.find_cell(raw, study, cell_id)
    spec = studies.resolve(raw, cell)
    data_files = studies.data_paths(scale, studies.paper_dataset(raw, cell))
    trunk = None
    if studies.has_shared_trunk(raw, study) and spec.spawn_step:
        trunk = train.load_snapshot(studies.trunk_path(scale, study, spec.spawn_step), studies.trunk_key(spec),
                                    stage=f"{studies.scale_dir(scale)}:trunk-{study}")
    resume = Resume(cell_file(study_dir(paths.STUDY_RESUME_DIR), scale, f"{study}-{cell_id}"),
                    {"stage": f"{scale}:{study}-{cell_id}", "spec": spec.record()})
    start = time.perf_counter()
    with tqdm(total=api.experiment_work(spec), desc=f"cell {study}/{cell_id}", disable=None) as bar:
        result = api.run_experiment(spec, data_files["train"], data_files["test"], progress=bar, trunk=trunk,
                                    resume=resume)
    print(f"cell {study}/{cell_id}: {result['status']} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    out = {"study": study, "cell": cell_id, "labels": cell.labels, "scale": scale, "spec": spec.record(), **result}
    write_text_atomic(studies.cell_output(scale, study, cell_id), json.dumps(_finite(out), indent=1) + "\n")
    numerics.record(studies.numerics_record(scale, f"{study}-{cell_id}"), f"{study}-{cell_id}", spec.device)
    resume.clear()  # the result is written: the progress that led to it is no longer needed


if __name__ == "__main__":
    main()
