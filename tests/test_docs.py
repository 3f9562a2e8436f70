"""The README and docs/: a short first page, links that resolve, and every measured number found in the
committed file it cites, so that a relock or a new benchmark that changes a figure fails here until the prose
is updated.

The rule for numbers (docs/development.md, "Numbers in the docs"):
- A *unit* of prose is a paragraph, a bullet item, a heading or a table row. Fenced code blocks and `code
  spans` are never read: they hold commands, params, paths and values as typed, not claims.
- A unit *cites* a file when it links to it or names it in a code span, and the file is a committed data
  file: anything under reports/, benchmarks/ or studies/ that is not code, or params.yaml. A table row with no
  citation of its own takes those of the paragraph just above its table (the table's caption).
- A number *reads as a measurement* when it is a decimal or is followed by %, ×, x, pp, a time, a size or a
  rate. A plain integer in prose is a count or a setting; in a table row every number counts.
- Each measurement in a unit that cites files (and each number of a table row that does) must occur in one of
  them, compared as a decimal value (1,691 and 1691 are one number, 0.50 and 0.5 too; no rounding, no unit
  conversion). A measurement in a unit that cites nothing is an error: cite its file or drop it. The paper's
  definitions, the 2% line and the 95% interval, are not measurements.
- Never read as numbers: dates (2026-11-29), versions with two dots (5.20.2), numbers glued to letters or to
  a hyphen or slash (fp32, L2, x86-64, H100, 4f40446), and a number right after a name word (Table 1,
  Figure 3, Zen 3, issue 21, Python 3.11, arXiv 2312.09832).
"""
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^```.*?^```[^\n]*$", re.S | re.M)
SPAN = re.compile(r"`[^`\n]+`")
LINK = re.compile(r"!?\[([^\]]*)\]\(([^)\s]+)\)")
DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
VERSION = re.compile(r"(?<![\w.])\d+(?:\.\d+){2,}")
NAMED = re.compile(r"\b(?:Tables?|Figures?|Fig\.|Zen|[Ii]ssues?|Python|items?|arXiv)\s+\d+")
NUMBER = re.compile(r"(?<![\w./\-])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?[MGk]?(?![\w/\-]|\.\d)")
UNIT = re.compile(r"\s?(%|×(?!\d)|x\b|pp\b|s\b|ms\b|min\b|h\b|hours?\b|seconds?\b|minutes?\b|[GTP]FLOP|[KMG]i?B\b)")
DEFINITIONS = {("2", "%"), ("95", "%")}  # the paper's line between connected and not; the interval's level
FILE_NUMBER = re.compile(r"\d+(?:,\d{3})*(?:\.\d+)?")
DATA_DIRS = ("reports/", "benchmarks/", "studies/")
CODE_SUFFIXES = (".py", ".sh")


def tracked() -> set[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return set(filter(None, out.split("\0")))


def units(text: str):
    """(line number, kind, text, caption) of each paragraph, bullet item, heading and table row, code blocks
    left out; a table row's caption is the paragraph right above its table."""
    text = FENCE.sub(lambda m: "\n" * m.group().count("\n"), text)
    out, current = [], []
    start, kind, last = 0, "", ("", "")  # the block being read; the last one read (kind, text)

    def flush():
        nonlocal last
        if current:
            out.append((start, kind, "\n".join(current), ""))
            last = (kind, "\n".join(current))
            current.clear()

    for n, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("|"):
            flush()
            if kind != "row":
                caption = last[1] if last[0] == "paragraph" else ""
            kind = "row"
            if not re.fullmatch(r"\|[\s:|-]+\|", stripped):
                out.append((n, "row", stripped, caption))
            continue
        if kind == "row":
            kind, last = "", ("row", "")
        if not stripped:
            flush()
            kind = ""
        elif stripped.startswith("#"):
            flush()
            out.append((n, "heading", stripped, ""))
            kind, last = "", ("heading", stripped)
        elif re.match(r"([-*]|\d+\.)\s", stripped):
            flush()
            start, kind = n, "bullet"
            current.append(stripped)
        else:
            if kind not in ("paragraph", "bullet"):
                flush()
                start, kind = n, "paragraph"
            current.append(stripped)
    flush()
    return out


def citations(page: Path, text: str, files: set[str]) -> set[str]:
    """The committed data files a unit cites: links (relative to its page) and code spans naming a path."""
    named = [(page.parent / target.split("#")[0]).resolve() for _, target in LINK.findall(text)
             if not re.match(r"\w+:", target) and target.split("#")[0]]
    named += [(ROOT / span.strip("`")).resolve() for span in SPAN.findall(text) if "/" in span or "." in span]
    out = set()
    for path in named:
        try:
            rel = path.relative_to(ROOT).as_posix()
        except ValueError:
            continue
        if rel in files and (rel.startswith(DATA_DIRS) or rel == "params.yaml") and not rel.endswith(CODE_SUFFIXES):
            out.add(rel)
    return out


def prose(text: str) -> str:
    """What a unit says in words: no code spans, link targets dropped, dates, versions and names blanked."""
    text = SPAN.sub(" ", text)
    text = LINK.sub(lambda m: m.group(1), text)
    for pattern in (DATE, VERSION, NAMED):
        text = pattern.sub(" ", text)
    return text


def numbers(text: str):
    """(value, as written, the unit that follows) of every number in a unit's prose."""
    for m in NUMBER.finditer(text):
        written = m.group(1) + (m.group(2) or "")
        unit = UNIT.match(text, m.end())
        yield Decimal(written.replace(",", "")), written, unit.group(1) if unit else ""


def is_measurement(written: str, unit: str) -> bool:
    return "." in written or bool(unit)


_FILE_CACHE: dict[str, set[Decimal]] = {}


def file_numbers(rel: str) -> set[Decimal]:
    if rel not in _FILE_CACHE:
        text = (ROOT / rel).read_text(errors="replace")
        _FILE_CACHE[rel] = {Decimal(s.replace(",", "")) for s in FILE_NUMBER.findall(text)}
    return _FILE_CACHE[rel]


def check(page: Path, text: str, files: set[str]) -> list[str]:
    """Every problem with a page's numbers, one line each."""
    problems = []
    name = page.relative_to(ROOT).as_posix()
    for line, kind, body, caption in units(text):
        cited = citations(page, body, files) or (citations(page, caption, files) if kind == "row" else set())
        found = set().union(*(file_numbers(f) for f in cited)) if cited else set()
        for value, written, unit in numbers(prose(body)):
            if (written, unit) in DEFINITIONS or (kind != "row" and not is_measurement(written, unit)):
                continue
            if cited and value not in found:
                problems.append(f"{name}:{line}: {written} is in none of {sorted(cited)}")
            elif not cited and is_measurement(written, unit):
                problems.append(f"{name}:{line}: {written} cites no committed file")
    return problems


# ---------------------------------------------------------------------------------------------- the docs

def test_the_readme_is_at_most_250_lines():
    assert len(README.read_text().splitlines()) <= 250


def test_every_relative_link_points_to_an_existing_file():
    broken = []
    for page in PAGES:
        for _, target in LINK.findall(FENCE.sub("", page.read_text())):
            path = target.split("#")[0]
            if path and not re.match(r"\w+:", target) and not (page.parent / path).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, "\n".join(broken)


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(ROOT / t.split("#")[0]).resolve() for _, t in LINK.findall(README.read_text())}
    assert [p for p in PAGES[1:] if p.resolve() not in linked] == []


def test_every_file_named_as_a_source_is_committed():
    """A code span or link naming a file under reports/ or benchmarks/ (no placeholder) names a committed one."""
    files, missing = tracked(), []
    for page in PAGES:
        text = FENCE.sub("", page.read_text())
        spans = [s.strip("`") for s in SPAN.findall(text)]
        links = [(page.parent / t.split("#")[0]).resolve().relative_to(ROOT).as_posix()
                 for _, t in LINK.findall(text) if not re.match(r"\w+:", t) and t.split("#")[0]]
        for rel in spans + links:
            if rel.startswith(("reports/", "benchmarks/")) and re.fullmatch(r"[\w./-]+\.\w+", rel) \
                    and rel not in files:
                missing.append(f"{page.relative_to(ROOT)}: {rel}")
    assert not missing, "\n".join(missing)


def test_every_number_is_in_the_file_it_cites():
    files = tracked()
    problems = [p for page in PAGES for p in check(page, page.read_text(), files)]
    assert not problems, "\n".join(problems)


def test_the_check_catches_a_stale_number_and_an_uncited_measurement(tmp_path):
    """The checker itself, on a page of its own: a number its file lacks, and a measurement citing nothing."""
    files = tracked()
    page = ROOT / "docs" / "example.md"  # never written: check() reads the text given
    good = "The matmul rate is 46.8 GFLOP/s (`reports/benchmarks.md`), on 2 cores, 2026-11-29, in Table 1."
    assert check(page, good, files) == []
    stale = "The matmul rate is 47.9 GFLOP/s ([benchmarks](../reports/benchmarks.md))."
    assert check(page, stale, files) == ["docs/example.md:1: 47.9 is in none of ['reports/benchmarks.md']"]
    uncited = "It took 34 s.\n\nBelow the 2% line, with a 95% interval; 3 pairs."
    assert check(page, uncited, files) == ["docs/example.md:1: 34 cites no committed file"]
    table = "Rates (`reports/benchmarks.md`):\n\n| a | b |\n|---|---|\n| x | 46.8 |\n| y | 99.9 |"
    assert check(page, table, files) == ["docs/example.md:6: 99.9 is in none of ['reports/benchmarks.md']"]
    assert check(page, "```\nmake dispatch JOBS=64  # 64.5 s\n```\nRun `-S lr=0.005`.", files) == []


# ------------------------------------------------------------------------------- the quick start, for real

QUICK_START = ["make repro", "source .venv/bin/activate", "dvc exp run -S optimizer=adam", "dvc exp show",
               "dvc plots show"]


def quick_start_commands() -> list[str]:
    """The commands of the README's quick-start code block, in order, comments dropped."""
    section = README.read_text().split("\n## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.split("#", 1)[0].strip()]


def test_the_quick_start_block_is_the_one_the_e2e_test_runs():
    """Its system packages are the Makefile's, then the commands the e2e test below runs, in this order."""
    commands = quick_start_commands()
    makefile = (ROOT / "Makefile").read_text()
    apt = re.search(r"^APT_PACKAGES := (.*)$", makefile, re.M).group(1).split()
    assert commands[0].split("install -y", 1)[0].startswith("sudo apt-get") and \
        commands[0].split("install -y", 1)[1].split() == apt
    assert commands[1:] == QUICK_START


@pytest.mark.e2e
def test_the_quick_start_runs_in_a_fresh_copy(tmp_path):
    """A newcomer's path, in a fresh copy of the repository: `make repro`'s `dvc repro` (the set-up is this
    environment's), then the experiment, the table and the plots, as the README's quick start writes them."""
    import csv
    import io
    import os

    from .fixtures import copy_repo

    repo = copy_repo(tmp_path / "repo")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}

    def run(command: str) -> str:
        proc = subprocess.run(command, shell=True, cwd=repo, capture_output=True, text=True, env=env)
        assert proc.returncode == 0, f"{command}:\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout

    outputs = {}
    for command in quick_start_commands()[1:]:
        if command == "make repro":
            command = "dvc repro"  # the set-up half of the target is done: this test runs in its .venv
        elif command.startswith("source "):
            continue  # PATH above puts the same .venv first
        outputs[command] = run(command)
    assert "Running stage 'train'" in outputs["dvc repro"]
    assert "workspace" in outputs["dvc exp show"]
    rows = list(csv.DictReader(io.StringIO(run("dvc exp show --csv"))))
    experiments = [r for r in rows if r.get("Experiment")]
    assert experiments, rows
    assert all(r.get("optimizer") == "adam" for r in experiments)
    assert all(r.get("barrier_test") not in (None, "", "-") for r in experiments)
    assert all(r.get("barrier_train") not in (None, "", "-") for r in experiments)
    page = repo / "dvc_plots/index.html"
    assert page.is_file(), outputs["dvc plots show"]
    html = page.read_text()
    assert all(name in html for name in ("training_loss", "error_vs_alpha"))
