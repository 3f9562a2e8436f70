"""source: find the dataset's files (downloading them if missing and allowed) -> data/source.json.

It runs on every `dvc repro` (always_changed) and writes a content fingerprint of the files; `prepare`
depends on that fingerprint, so a changed source rebuilds the .beton files and an unchanged one does not.
With `--study-dataset NAME --scale S` it serves the studies instead (studies/S/data/NAME/).
"""
import json

from lmc import datasets, studies
from lmc.io import write_text_atomic
from lmc.spec import load_params
from lmc.stage import entry


@entry
def main() -> None:
    spec = load_params()
    dataset, out = studies.stage_target(spec)
    files = datasets.locate(dataset, spec.data_root, spec.download)
    write_text_atomic(out["source"], json.dumps(datasets.fingerprint(dataset, spec.data_root, files), indent=1) + "\n")


if __name__ == "__main__":
    main()
