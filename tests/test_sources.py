"""Expanding what a user names: link loops, links out of the folder, deep trees, unlistable globs, odd names."""
from __future__ import annotations

import io
import itertools
import os
import sys

import pytest
from PIL import Image

from deepsift.sources import SourceError, expand_inputs, walk_images


def _images(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        Image.new("RGB", (8, 8), (1, 2, 3)).save(folder / n)


def _walk(root, limit=1000, **kw):
    return list(itertools.islice(walk_images(root, **kw), limit))


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "root"
    _images(root, ["a.png", "b.png"])
    _images(root / "sub", ["c.png", "d.png"])
    return root


def test_a_link_back_up_is_one_error_row_not_369_rows(tree):
    os.symlink("..", tree / "sub" / "up")
    items = _walk(tree)
    files = [i for i in items if isinstance(i, str)]
    errors = [i for i in items if isinstance(i, SourceError)]
    assert sorted(os.path.basename(f) for f in files) == ["a.png", "b.png", "c.png", "d.png"]
    assert len(errors) == 1 and errors[0].source == str(tree / "sub" / "up")
    assert "link loop" in errors[0].error and str(tree) in errors[0].error


def test_two_loop_links_do_not_make_the_walk_endless(tree):
    os.symlink("..", tree / "sub" / "up")
    os.symlink("../..", tree / "sub" / "upup")  # leads out of the folder: not followed either
    os.symlink(".", tree / "self")
    items = _walk(tree, limit=10_000)
    assert len(items) < 10
    assert len([i for i in items if isinstance(i, str)]) == 4
    assert {os.path.basename(i.source) for i in items if isinstance(i, SourceError)} == {"up", "upup", "self"}


def test_links_out_of_the_named_folder_only_with_follow_links(tree, tmp_path):
    _images(tmp_path / "elsewhere", ["x.png"])
    os.symlink(tmp_path / "elsewhere", tree / "ext")
    os.symlink("sub", tree / "alias")  # a second way into sub, inside the folder: walked once
    (tree / "one.png").symlink_to(tmp_path / "elsewhere" / "x.png")  # links to files are read as files
    items = _walk(tree)
    files = sorted(os.path.basename(i) for i in items if isinstance(i, str))
    assert files == ["a.png", "b.png", "c.png", "d.png", "one.png"]
    (err,) = [i for i in items if isinstance(i, SourceError)]
    assert err.source == str(tree / "ext") and "outside" in err.error and "--follow-links" in err.error
    followed = _walk(tree, follow_links=True)
    assert all(isinstance(i, str) for i in followed)
    assert sorted(os.path.basename(i) for i in followed) == files[:4] + ["one.png", "x.png"]
    # expand_inputs passes the choice on
    assert any(isinstance(i, SourceError) for i in expand_inputs([str(tree)]))
    assert not any(isinstance(i, SourceError) for i in expand_inputs([str(tree)], follow_links=True))


def test_followed_links_still_visit_each_folder_once(tree):
    os.symlink("..", tree / "sub" / "up")
    items = _walk(tree, follow_links=True)
    assert len([i for i in items if isinstance(i, str)]) == 4
    assert len([i for i in items if isinstance(i, SourceError)]) == 1


def test_a_very_deep_tree_does_not_exhaust_the_recursion_limit(tmp_path):
    depth = sys.getrecursionlimit() + 200
    deep = tmp_path / "deep"
    path = str(deep)
    os.mkdir(path)
    for _ in range(depth):  # os.makedirs itself recurses
        path += "/d"
        os.mkdir(path)
    Image.new("RGB", (8, 8)).save(os.path.join(path, "bottom.png"))
    try:
        items = list(walk_images(deep))
    finally:  # shutil.rmtree (pytest's clean-up) recurses too: take the tree down from the bottom
        os.unlink(os.path.join(path, "bottom.png"))
        while path != str(deep):
            os.rmdir(path)
            path = os.path.dirname(path)
    assert len(items) == 1 and items[0].endswith("bottom.png")


def test_walk_order_is_sorted_and_depth_first(tmp_path):
    _images(tmp_path / "r", ["b.png", "z.png"])
    _images(tmp_path / "r" / "m", ["a.png"])
    (tmp_path / "r" / "notes.txt").write_text("x")
    names = [os.path.relpath(p, tmp_path / "r") for p in walk_images(tmp_path / "r")]
    assert names == ["b.png", os.path.join("m", "a.png"), "z.png"]


def without_dac(cmd):
    """``cmd`` run so that folder permissions apply even to root (CI runs as root)."""
    if os.geteuid() != 0:
        return cmd
    drop = "-dac_override,-dac_read_search"
    return ["setpriv", f"--inh-caps={drop}", f"--bounding-set={drop}", "--", *cmd]


def test_a_glob_into_an_unlistable_folder_is_one_error_row(tmp_path):
    import subprocess

    locked = tmp_path / "locked"
    _images(locked, ["x.png"])
    locked.chmod(0)
    script = ("import json, sys; from deepsift.sources import expand_inputs, SourceError; "
              "print(json.dumps([[type(i).__name__, getattr(i, 'error', i)] for i in expand_inputs(sys.argv[1:])]))")
    try:
        res = subprocess.run(without_dac([sys.executable, "-c", script, str(locked / "*.png"), str(locked / "x.png"),
                                          str(locked / "**" / "*.png")]),
                             capture_output=True, text=True, timeout=120)
    finally:
        locked.chmod(0o755)
    assert res.returncode == 0, res.stderr
    import json

    rows = json.loads(res.stdout)
    assert [r[0] for r in rows] == ["SourceError"] * 3
    assert f"cannot read directory {locked} (Permission denied)" in rows[0][1]
    assert "cannot access (Permission denied)" in rows[1][1]
    assert "Permission denied" in rows[2][1]


def test_names_that_are_not_utf8_come_through_stdin(tmp_path, monkeypatch):
    raw = os.fsencode(str(tmp_path)) + b"/caf\xe9.png"
    Image.new("RGB", (8, 8)).save(raw.decode("utf-8", "surrogateescape"))
    fake_stdin = io.TextIOWrapper(io.BytesIO(raw + b"\n# a comment\n\n"), encoding="utf-8", errors="strict")
    monkeypatch.setattr(sys, "stdin", fake_stdin)
    (item,) = list(expand_inputs(["-"]))
    assert os.fsencode(item) == raw


def test_a_name_with_a_nul_byte_is_an_error_row_not_a_crash():
    (item,) = list(expand_inputs(["bad\0name.png"], stdin=None))
    assert isinstance(item, SourceError) and "null" in item.error


def test_detect_and_embed_report_an_unlistable_glob_as_one_row(code_model_dir, tmp_path):
    """Not 'cannot write <out>' (the old message) nor a traceback: a per-input error row, exit 3."""
    import json
    import subprocess

    import numpy as np

    from deepsift.model.headset import save_headset
    from deepsift.model.heads import make_head

    rng = np.random.default_rng(0)
    save_headset({"linear": make_head("linear").fit(rng.normal(size=(20, 192)), np.r_[np.zeros(10), np.ones(10)])},
                 tmp_path / "heads")
    _images(tmp_path / "ok", ["good.png"])
    locked = tmp_path / "locked"
    _images(locked, ["x.png"])
    pattern = str(locked / "*.png")
    script = (
        "import sys; from deepsift.cli import main; a = sys.argv[1:]; "
        "r1 = main(['detect', a[0], a[1], '--model', a[2], '--heads', a[3], '--format', 'jsonl', '--out', a[4]]); "
        "r2 = main(['embed', a[0], a[1], '--model', a[2], '--out', a[5]]); print(r1, r2)"
    )
    locked.chmod(0)
    try:
        res = subprocess.run(without_dac([sys.executable, "-c", script, pattern, str(tmp_path / "ok" / "good.png"),
                                          str(code_model_dir), str(tmp_path / "heads"), str(tmp_path / "out.jsonl"),
                                          str(tmp_path / "emb.parquet")]),
                             capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    finally:
        locked.chmod(0o755)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    assert res.stdout.split() == ["3", "3"]
    rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["verdict"] for r in rows] == ["error", rows[1]["verdict"]] and rows[1]["verdict"] != "error"
    assert rows[0]["source"] == pattern and f"cannot read directory {locked} (Permission denied)" in rows[0]["error"]
    from deepsift.model.embeddings import read_embeddings

    sources, emb, errors = read_embeddings(tmp_path / "emb.parquet")
    assert sources[0] == pattern and "Permission denied" in errors[0] and errors[1] is None
