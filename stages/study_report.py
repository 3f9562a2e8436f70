"""study_report: one study's cells at a scale -> reports/<scale>/<study>.md (beside the paper's numbers, and at
any scale but cpu beside the cpu scale's), .csv and .png.

    python -m stages.study_report <study> --scale <scale>
"""
from lmc import studies, study_report
from lmc.io import write_text_atomic
from lmc.stage import entry


@entry
def main() -> None:
    args = studies.stage_args("study")
    raw = studies.load(args.scale)
    frame = study_report.cell_frame(raw, args.study)
    out = studies.report_path(args.scale, args.study)
    write_text_atomic(out.with_suffix(".md"), study_report.markdown(raw, args.study, frame))
    write_text_atomic(out.with_suffix(".csv"), frame.to_csv(index=False, float_format="%.6f"))
    study_report.figure(raw, args.study, frame, out.with_suffix(".png"), study_report.pair_frame(raw, args.study))


if __name__ == "__main__":
    main()
