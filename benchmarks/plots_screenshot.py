"""Re-make reports/plots.png: the page `dvc plots show` writes for the workspace's results, as headless
Chromium draws it offline (what a user sees; not a pipeline output, so not byte-pinned).

    python benchmarks/plots_screenshot.py [--repo .] [--out reports/plots.png]
"""
import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from lmc import browser
from lmc.io import write_bytes_atomic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path("."))
    parser.add_argument("--out", type=Path, default=None, help="default: <repo>/reports/plots.png")
    args = parser.parse_args()
    if not browser.chromium():
        sys.exit("error: chromium not found; `make test-system-packages` installs it")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["dvc", "plots", "show", "-o", tmp], cwd=args.repo, check=True, stdout=subprocess.DEVNULL)
        shot = Path(tmp) / "plots.png"
        browser.run(Path(tmp) / "index.html", "--hide-scrollbars", "--window-size=1400,1700", f"--screenshot={shot}")
        write_bytes_atomic(args.out or args.repo / "reports/plots.png", shot.read_bytes())


if __name__ == "__main__":
    main()
