"""Dependencies run one way: the core never imports the layers built on top of it."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import deepsift

PKG = Path(deepsift.__file__).parent
CORE = ["images.py", "exceptions.py", "sources.py", "output.py", "model", "data"]
UPPER = ("deepsift.generate", "deepsift.challenges", "deepsift.web", "deepsift.cli", "deepsift.evaluate",
         "deepsift.train")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    pkg_parts = ("deepsift." + ".".join(path.relative_to(PKG).with_suffix("").parts)).split(".")
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg_parts[: len(pkg_parts) - node.level]
                found.add(".".join(base + ([node.module] if node.module else [])))
            else:
                found.add(node.module or "")
    return found


def core_files():
    for entry in CORE:
        p = PKG / entry
        yield from (sorted(p.rglob("*.py")) if p.is_dir() else [p])


@pytest.mark.parametrize("path", list(core_files()), ids=lambda p: str(p.relative_to(PKG)))
def test_core_does_not_import_upper_layers(path):
    if path.name == "cli.py":  # a folder's CLI module is the top layer by definition
        return
    bad = sorted(m for m in imported_modules(path) if m.startswith(UPPER))
    assert not bad, f"{path.relative_to(PKG)} imports {bad}"


def test_no_torchvision_timm_or_unpickling():
    for path in PKG.rglob("*.py"):
        text = path.read_text()
        assert "import torchvision" not in text and "import timm" not in text, path
        if path.name != "official.py":  # the one explicit, flag-guarded unpickler
            assert "pickle.load" not in text and "joblib.load" not in text, path
