"""The bounded pre-scan of score files agrees with a real JSON parser on depth, strings and escapes."""
from __future__ import annotations

import json

import numpy as np
import pytest

from deepsift.evaluate import prescan as P
from deepsift.exceptions import EvaluationError

TRICKY = ['[', ']', '{', '}', '"', '\\', '\\"', '[[[[[[[[[[', 'a\\\\', '\u00e9', '\u2028', 'x' * 40]


def _leaf(rng: np.random.Generator) -> object:
    """A string full of brackets, quotes and backslashes, or a number."""
    return "".join(rng.choice(TRICKY, rng.integers(0, 6))) if rng.random() < 0.7 else float(rng.random())


def _doc(rng: np.random.Generator, depth: int) -> object:
    """A random JSON value exactly ``depth`` levels deep, with tricky leaves beside its deepest branch."""
    if depth == 0:
        return _leaf(rng)
    items = [_doc(rng, depth - 1)] + [_leaf(rng) for _ in range(rng.integers(0, 3))]
    if rng.random() < 0.5:
        return items
    return {f"{_leaf(rng)}{k}": v for k, v in enumerate(items)}


@pytest.mark.parametrize("chunk", [3, 7, 64, 1 << 18])  # chunk ends inside strings, escapes and brackets
def test_the_prescan_measures_json_depth_as_the_parser_does(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(P, "CHUNK", chunk)
    rng = np.random.default_rng(chunk)
    for i in range(150):
        depths = rng.integers(1, 13, int(rng.integers(1, 4)))
        jsonl = tmp_path / f"d{i}.jsonl"
        jsonl.write_text("".join(json.dumps(_doc(rng, int(d)), ensure_ascii=bool(i % 2)) + "\n" for d in depths),
                         encoding="utf-8")
        deepest = int(depths.max())
        if deepest <= P.MAX_DEPTH:
            P.prescan(jsonl)
        else:
            with pytest.raises(EvaluationError, match="nested deeper"):
                P.prescan(jsonl)


def test_brackets_hidden_behind_a_broken_string_are_still_counted(tmp_path):
    cases = {
        "newline.jsonl": b'{"id": "abc\n' + b"[" * 30 + b'"}\n',  # a string cannot span lines
        "escaped.jsonl": b'{"id": "a\\"' + b"[" * 30 + b"\n",  # the quote is escaped: the string never ends
        "open.json": b'{"id": "' + b"a" * (P.MAX_LINE + 10),  # endless string
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(EvaluationError, match="line 1"):
            P.prescan(tmp_path / name)
    (tmp_path / "fine.jsonl").write_bytes(b'{"id": "a\\\\", "x": "[[[[[[[[[[[[[[[[", "score": 0.5}\n')
    assert P.prescan(tmp_path / "fine.jsonl").lines == 1


def test_a_utf8_character_cut_by_a_chunk_end_is_fine(tmp_path, monkeypatch):
    monkeypatch.setattr(P, "CHUNK", 5)
    p = tmp_path / "s.csv"
    p.write_text("id,score\n" + "".join(f"caf\u00e9\u4e2d{i},0.5\n" for i in range(50)), encoding="utf-8")
    assert P.prescan(p).lines == 51
    p.write_bytes(p.read_bytes()[:-4] + b"\xe4\xb8\n")
    with pytest.raises(EvaluationError, match="line 51: cannot read: not utf-8"):
        P.prescan(p)
