"""study_report: one study's cells -> reports/<study>.md (beside the paper's numbers), .csv and .png.

    python -m stages.study_report <study>
"""
import sys

from lmc import studies, study_report
from lmc.io import write_text_atomic
from lmc.stage import entry


@entry
def main() -> None:
    study = sys.argv[1]
    raw = studies.load()
    frame = study_report.cell_frame(raw, study)
    out = studies.REPORTS_DIR / study
    write_text_atomic(out.with_suffix(".md"), study_report.markdown(raw, study, frame))
    write_text_atomic(out.with_suffix(".csv"), frame.to_csv(index=False, float_format="%.6f"))
    study_report.figure(raw, study, frame, out.with_suffix(".png"), study_report.pair_frame(raw, study))


if __name__ == "__main__":
    main()
