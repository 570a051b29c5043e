"""Imports run one way across the whole package: each layer imports only itself and the layers below.

Layers, lowest first (a module's layer comes from its first name under ``deepsift``):

    0 base    exceptions, choices, decision, filenames   (and the package root's __version__)
    1 io      images, urlfetch, sources, output, outplaces, hub, jpegcrop, pngcrop, fastdecode, raytools
    2 core    model, data
    3 tools   evaluate, generate, train, adapt
    4 apps    challenges, server, web, demo
    5 cli     cliargs, cli, __main__, and every ``cli.py`` of every area

Also: no import cycle anywhere (function-level imports included); a sub-command module
(``<area>/cli.py``) never imports the root ``deepsift.cli`` (the grammar lives in
``deepsift.cliargs``); and nothing but a CLI module imports a CLI module.
A new top-level module or package must be given a layer here.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import deepsift

PKG = Path(deepsift.__file__).parent
LAYERS = {
    "exceptions": 0, "choices": 0, "decision": 0, "filenames": 0,
    "images": 1, "urlfetch": 1, "sources": 1, "output": 1, "outplaces": 1, "hub": 1, "jpegcrop": 1, "pngcrop": 1, "fastdecode": 1, "raytools": 1,
    "model": 2, "data": 2,
    "evaluate": 3, "generate": 3, "train": 3, "adapt": 3,
    "challenges": 4, "server": 4, "web": 4, "demo": 4,
    "cliargs": 5, "cli": 5, "__main__": 5,
}  # fmt: skip
LAYER_NAMES = ["base", "io", "core", "tools", "apps", "cli"]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def is_cli(mod: str) -> bool:
    return mod.split(".")[-1] in ("cli", "cliargs", "__main__")


def layer(mod: str) -> int:
    if is_cli(mod):
        return 5
    top = mod.split(".")[1] if mod.count(".") else None
    if top is None:  # the package root: only __version__ and lazy re-exports
        return 0
    assert top in LAYERS, f"deepsift.{top} has no layer in tests/test_architecture.py: add it to LAYERS"
    return LAYERS[top]


def imports(mod: str) -> set[str]:
    """The deepsift modules ``mod`` imports, at any depth of the file (function-level imports too)."""
    path = MODULES[mod]
    package = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = (package[: len(package) - node.level + 1] if node.level else [])
            target = ".".join(base + ([node.module] if node.module else [])) if node.level else (node.module or "")
            names = [target] + [f"{target}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in MODULES:  # deepsift.data.reader.read_d3 -> deepsift.data.reader
                name = name.rpartition(".")[0]
            if name and name != mod and name.startswith("deepsift"):
                found.add(name)
    return found


GRAPH = {m: imports(m) for m in MODULES}


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_imports_run_down_the_layers(mod):
    if mod == "deepsift":  # the root's lazy __getattr__ re-exports Detector; it imports nothing eagerly
        return
    bad = [f"{m} ({LAYER_NAMES[layer(m)]})" for m in sorted(GRAPH[mod]) if m != "deepsift" and layer(m) > layer(mod)]
    assert not bad, f"{mod} ({LAYER_NAMES[layer(mod)]}) imports a higher layer: {bad}"


@pytest.mark.parametrize("mod", sorted(m for m in MODULES if m.endswith(".cli") and m != "deepsift.cli"))
def test_sub_command_modules_never_import_the_root_cli(mod):
    assert "deepsift.cli" not in GRAPH[mod], f"{mod} imports deepsift.cli: take the grammar from deepsift.cliargs"


@pytest.mark.parametrize("mod", sorted(m for m in MODULES if not is_cli(m)))
def test_only_cli_modules_import_cli_modules(mod):
    assert not [m for m in GRAPH[mod] if is_cli(m)], f"{mod} imports a CLI module"


def test_no_import_cycles():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v] - {"deepsift"}:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_the_checker_sees_function_level_and_relative_imports():
    assert "deepsift.generate.ray_build" in GRAPH["deepsift.generate.builder"]  # imported inside build()
    assert "deepsift.cliargs" in GRAPH["deepsift.model.cli"]
    assert "deepsift.data.reader" in GRAPH["deepsift.data.cli"]


def test_no_torchvision_timm_or_unpickling():
    for path in PKG.rglob("*.py"):
        text = path.read_text()
        assert "import torchvision" not in text and "import timm" not in text, path
        if path.name != "official.py":  # the one explicit, flag-guarded unpickler
            assert "pickle.load" not in text and "joblib.load" not in text, path


def test_one_safe_file_name_helper():
    """Every module that turns a name into a file name uses deepsift.filenames.safe_name."""
    from deepsift.filenames import safe_name

    names = ["a/b", "a_b", "a.b", "../etc/passwd", ".hidden", "", "x" * 500, "ok-1.2", "a~b", "é"]
    got = [safe_name(n) for n in names]
    assert len(set(got)) == len(names)  # distinct texts, distinct names (a/b is not a_b)
    assert all("/" not in g and g and not g.startswith((".", "-")) and len(g) <= 140 for g in got)
    assert safe_name("ok-1.2") == "ok-1.2" and safe_name("a.b", dots=False) != safe_name("a_b", dots=False)
    for path in PKG.rglob("*.py"):
        if path.name != "filenames.py":
            text = path.read_text()
            assert "def _safe_name" not in text and "def safe_name" not in text, path


def test_one_progress_bar_rule():
    """Progress bars come from deepsift.output.progress only (stderr, terminal only, off under --quiet)."""
    for path in PKG.rglob("*.py"):
        if path.name != "output.py":
            text = path.read_text()
            assert "from tqdm" not in text and "import tqdm" not in text, f"{path}: use deepsift.output.progress"


def test_the_server_assembles_domains_without_importing_them():
    """deepsift/server knows domains only by name (deepsift.server.domains.DOMAIN_MODULES)."""
    for mod in MODULES:
        if mod.startswith("deepsift.server"):
            bad = sorted(m for m in imports(mod) if m.startswith(("deepsift.challenges", "deepsift.demo")))
            assert not bad, f"{mod} imports {bad}"


def test_one_image_walker_and_one_layout_reader():
    """Folders of images are walked by deepsift.sources.walk_images only; datasets are read by deepsift.data.layout."""
    walkers = ("os.walk(", "os.scandir(", "glob.iglob(", "glob.glob(")
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG).as_posix()
        text = path.read_text()
        if rel != "sources.py":
            assert not [w for w in walkers if w in text], f"{rel}: walk folders with deepsift.sources.walk_images"
        if rel not in ("sources.py", "choices.py", "data/layout.py"):  # layout: tells layouts apart, lists nothing
            assert "IMAGE_EXTENSIONS" not in text, f"{rel}: list images with deepsift.data.layout / sources"
        if rel not in ("data/layout.py",):
            assert "def detect_layout(root" not in text and "def generator_folders(fake_dirs: list[str | os" not in text
    from deepsift.evaluate import datasets
    from deepsift.model import fitting

    assert datasets.Sample is __import__("deepsift.data.layout", fromlist=["Sample"]).Sample
    assert "images_under" in fitting.__dict__ and "_layout_generator_folders" in fitting.__dict__
