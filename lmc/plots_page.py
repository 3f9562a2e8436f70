"""The page `dvc plots show` writes (.dvc/config: plots.html_template), with vega, vega-lite and vega-embed
inlined from vendor/vega/. DVC's own page loads them from a CDN, so it stays blank without internet; script
paths relative to the repository would break wherever `-o` puts the page. `python -m lmc.plots_page` rebuilds
it (a test checks it is fresh)."""
from pathlib import Path

from .io import write_text_atomic

ROOT = Path(__file__).resolve().parents[1]
VENDOR = ROOT / "vendor/vega"
SCRIPTS = ("vega.min.js", "vega-lite.min.js", "vega-embed.min.js")  # in load order: embed needs both
PAGE = ROOT / ".dvc/plots/page.html"
# DVC fills {plot_divs} (one <div> per plot, each calling vegaEmbed) and {refresh_tag}; {scripts}, DVC's CDN
# <script> tags, is left out on purpose.
SKELETON = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>lmc-twins: DVC plots</title>
%s
    <style>
        body { font-family: sans-serif; margin: 16px; }
        body > div { margin-bottom: 24px; }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def inline(name: str) -> str:
    code = (VENDOR / name).read_text(encoding="utf-8")
    code = "\n".join(line for line in code.splitlines() if not line.startswith("//# sourceMappingURL="))
    assert "</script" not in code.lower() and "{plot_divs}" not in code, name  # would break the page
    return f"    <script>/* {name}: see vendor/vega/ (BSD-3-Clause) */\n{code}\n    </script>"


def page() -> str:
    return SKELETON % "\n".join(inline(name) for name in SCRIPTS)


if __name__ == "__main__":
    write_text_atomic(PAGE, page())
