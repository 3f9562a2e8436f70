import configparser
import hashlib
import json
from pathlib import Path

from lmc import plots_page

# sha256 of build/*.min.js in the npm packages (`npm pack vega@5.20.2 vega-lite@5.2.0 vega-embed@6.18.2`).
VENDORED = {"vega.min.js": "4794d0169cb1f3ebad8117fe98ba5bd652dd725905ec0384e832391dbccb03be",
            "vega-lite.min.js": "d73157451b3978015ab31dacd55ff90d986ab8663fc0abed50f97b3cd90002cb",
            "vega-embed.min.js": "1ba9826431ddc9805e815ad92acc811c819f2bfd32bda2a128b8c4b5070fab5e"}


def test_vendored_scripts_are_npms_and_licensed():
    for name, digest in VENDORED.items():
        assert hashlib.sha256((plots_page.VENDOR / name).read_bytes()).hexdigest() == digest
        assert "Interactive Data Lab" in (plots_page.VENDOR / f"LICENSE-{name.removesuffix('.min.js')}").read_text()


def test_page_is_fresh_inlines_every_script_and_is_dvcs_template():
    page = plots_page.page()
    assert plots_page.PAGE.read_text(encoding="utf-8") == page, "run `python -m lmc.plots_page`"
    assert "{plot_divs}" in page and "{scripts}" not in page  # DVC's CDN <script> tags stay out
    assert "<script src" not in page and page.count("<script>") == 3
    config = configparser.ConfigParser()
    config.read(plots_page.ROOT / ".dvc/config")
    # DVC resolves a relative html_template against .dvc/.
    assert (plots_page.ROOT / ".dvc" / config["plots"]["html_template"]).resolve() == plots_page.PAGE


def test_plot_templates_draw_one_line_per_twin_and_pair():
    for name, hue, dash in (("twins", "pair", "twin"), ("pairs", "pair", "split")):
        spec = json.loads(Path(plots_page.ROOT / f".dvc/plots/{name}.json").read_text())
        assert spec["data"]["values"] == "<DVC_METRIC_DATA>"
        enc = spec["encoding"]
        assert enc["color"]["field"] == hue and enc["strokeDash"]["field"] == dash
        assert enc["x"]["title"] == "<DVC_METRIC_X_LABEL>" and enc["y"]["title"] == "<DVC_METRIC_Y_LABEL>"
