"""The layering rule of docs/ARCHITECTURE.md, checked on the source: a module imports only from its own layer or
below (plugins found by module name -- config fragments, objective parts, CLI commands -- are not imports)."""

from __future__ import annotations

import ast
from pathlib import Path

import ganforge

ROOT = Path(ganforge.__file__).parent
LAYERS = [
    {"errors", "registry", "fileio", "device", "images", "config", "progress", "__init__"},
    {"runs"},
    {"data", "models", "losses", "regularizers", "augment"},
    {"metrics"},
    {"training"},
    {"generate", "visualize", "evaluation", "export", "publish", "tf", "latent"},
    {"web", "report", "compare", "api"},
    {"cli", "__main__"},
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


# the one upward import by design: `ganforge.load` / `ganforge.train` resolve ganforge.api on first use
LAZY_FACE = {("__init__", "api")}


def _is_module(name: str) -> bool:
    return (ROOT / name).is_dir() or (ROOT / f"{name}.py").is_file()


def _imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module == "ganforge":  # `from ganforge import api`: each name
            out += [(node.lineno, f"ganforge.{a.name}" if _is_module(a.name) else "ganforge") for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ganforge":
            out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "ganforge"]
    return out


def test_every_package_module_has_a_layer():
    tops = {p.relative_to(ROOT).parts[0].removesuffix(".py") for p in ROOT.rglob("*.py")}
    assert tops <= set(LAYER), f"add {sorted(tops - set(LAYER))} to LAYERS here and in docs/ARCHITECTURE.md"


def test_modules_import_downward_only():
    bad = []
    for path in ROOT.rglob("*.py"):
        me = path.relative_to(ROOT).parts[0].removesuffix(".py")
        for line, module in _imports(path):
            parts = module.split(".")
            target = parts[1] if len(parts) > 1 else "__init__"
            if LAYER[target] > LAYER[me] and (me, target) not in LAZY_FACE:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not bad, "upward imports:\n" + "\n".join(bad)


SERVING = ("generate", "export", "publish", "evaluation", "web", "latent", "tf/export/", "tf/layout.py",
           "tf/generators.py")


def test_serving_a_generator_never_imports_training():
    """Reading a run folder is the runs layer's job: sampling, export, evaluation and the playground load a
    trained generator without importing the trainer (ganforge.training)."""
    bad = []
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT).as_posix()
        if not rel.startswith(SERVING):
            continue
        bad += [f"{rel}:{line} imports {m}" for line, m in _imports(path) if m.startswith("ganforge.training")]
    assert not bad, "serving code imports training:\n" + "\n".join(bad)
