"""The package's import graph, read from the source (lazy imports inside functions included): no circle, and no
module imports one from a layer above its own. The layers are the architecture: the numerics pins and file
helpers at the bottom (they load before torch), the spec, the parts a twin experiment is made of, training,
the experiment and the studies, then what drives them (the reproduction check, the dispatcher)."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = (
    ("paths", "io", "seeds", "browser", "numerics"),
    ("spec",),
    ("data", "datasets", "augment", "kernels", "models", "device", "align", "resume", "connectivity", "layerwise",
     "stage"),
    ("step", "train", "report"),
    ("api", "fingerprint", "studies", "study_report", "studies_dvc", "plots_page", "bundle", "cost"),
    ("reproduce", "dispatch.common"),
    ("dispatch.plan", "dispatch.worker"),
    ("dispatch.local", "dispatch.slurm", "dispatch.archive"),
    ("dispatch.executors",),
    ("dispatch.home",),
    ("dispatch.cli", "dispatch.__main__", "dispatch", ""),  # "": lmc/__init__.py
)
LAYER = {module: level for level, modules in enumerate(LAYERS) for module in modules}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT / "lmc").with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The lmc modules `path` imports (a name imported from a package counts as its module where it is one)."""
    name = module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1] if node.level > 1 else package
                target = ".".join([*base, *([node.module] if node.module else [])])
            elif node.module and node.module.split(".")[0] == "lmc":
                target = node.module.partition(".")[2]
            else:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}".strip(".")
                found.add(sub if sub in LAYER else target)
        elif isinstance(node, ast.Import):
            found |= {a.name.partition(".")[2] for a in node.names if a.name.split(".")[0] == "lmc"}
    return found - {name}


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in sorted((ROOT / "lmc").rglob("*.py"))}


def test_every_module_has_a_layer():
    assert set(graph()) == set(LAYER), "a module was added or removed: give it its layer in LAYERS"


def test_no_module_imports_one_from_a_layer_above_its_own():
    upward = [f"lmc.{m or '__init__'} (layer {LAYER[m]}) imports lmc.{d} (layer {LAYER[d]})"
              for m, deps in graph().items() for d in sorted(deps) if LAYER[d] > LAYER[m]]
    assert not upward, upward


def test_the_import_graph_has_no_circle():
    edges, seen, stack = graph(), set(), []

    def visit(module: str) -> None:
        if module in stack:
            raise AssertionError("import circle: " + " -> ".join(stack[stack.index(module):] + [module]))
        if module in seen:
            return
        stack.append(module)
        for dep in sorted(edges[module]):
            visit(dep)
        stack.pop()
        seen.add(module)

    for module in edges:
        visit(module)


def test_the_check_sees_an_import_that_goes_up(tmp_path, monkeypatch):
    """The graph reader finds relative, absolute and lazy imports alike, so an upward one cannot hide."""
    fake = tmp_path / "lmc"
    (fake / "dispatch").mkdir(parents=True)
    (fake / "io.py").write_text("def f():\n    from .dispatch import home\n")
    (fake / "dispatch" / "home.py").write_text("from .. import io\nimport lmc.spec\n")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    assert imports(fake / "io.py") == {"dispatch.home"}
    assert imports(fake / "dispatch" / "home.py") == {"io", "spec"}
