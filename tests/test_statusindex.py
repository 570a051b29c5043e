"""The on-disk status index of a real-image folder: latest line wins, kept up to date, rebuilt when stale."""
from __future__ import annotations

import json
import pickle

from deepsift.data.fetch import load_status, load_status_dict
from deepsift.data.statusindex import INDEX_FILE, StatusIndex


def _lines(*entries: dict) -> str:
    return "".join(json.dumps(e) + "\n" for e in entries)


def test_latest_line_wins_and_appended_lines_are_read_on_the_next_open(tmp_path):
    jsonl = tmp_path / "status.jsonl"
    jsonl.write_text(_lines({"id": "a", "status": "timeout"}, {"id": "b", "status": "http_404"},
                            {"id": "a", "status": "ok", "path": "a.jpg"}) + '{"id": "c", "stat')  # torn last line
    with load_status(tmp_path) as idx:
        assert idx["a"] == {"id": "a", "status": "ok", "path": "a.jpg"} and idx.get("b")["status"] == "http_404"
        assert "c" not in idx and idx.get("c") is None and len(idx) == 2
        assert dict(idx.items()) == load_status_dict(tmp_path)
    assert (tmp_path / INDEX_FILE).is_file()
    with open(jsonl, "a") as fh:  # the torn line is ended by the next run, which appends more
        fh.write("\n" + _lines({"id": "c", "status": "ok", "path": "c.png"}, {"id": "b", "status": "ok", "path": "b"}))
    with StatusIndex(tmp_path) as idx:
        assert idx["c"]["path"] == "c.png" and idx["b"]["status"] == "ok" and len(idx) == 3
        assert dict(idx.items()) == load_status_dict(tmp_path)


def test_a_missing_or_stale_index_is_rebuilt_from_the_jsonl(tmp_path):
    jsonl = tmp_path / "status.jsonl"
    jsonl.write_text(_lines({"id": "a", "status": "ok", "path": "a.jpg"}, {"id": "b", "status": "http_404"}))
    StatusIndex(tmp_path).close()
    (tmp_path / INDEX_FILE).unlink()  # missing
    with StatusIndex(tmp_path) as idx:
        assert set(idx) == {"a", "b"}
    jsonl.write_text(_lines({"id": "z", "status": "ok", "path": "z.jpg"}))  # replaced by a shorter file
    with StatusIndex(tmp_path) as idx:
        assert set(idx) == {"z"}
    with open(jsonl, "r+") as fh:  # rewritten in place, same length, same inode: the tail check sees it
        fh.write(json.dumps({"id": "y", "status": "ok", "path": "z.jpg"}))
    with StatusIndex(tmp_path) as idx:
        assert set(idx) == {"y"}
    (tmp_path / INDEX_FILE).write_bytes(b"not a database at all")  # a stray file under the index's name
    with StatusIndex(tmp_path) as idx:
        assert set(idx) == {"y"}


def test_no_jsonl_no_index_file_and_duplicates_are_seen_once(tmp_path):
    with StatusIndex(tmp_path) as idx:
        assert len(idx) == 0 and idx.get("a") is None
        assert [idx.first_sighting(r) for r in ("a", "b", "a", "c", "b")] == [True, True, False, True, False]
    assert list(tmp_path.iterdir()) == []  # a fresh folder is left as it was


def test_the_index_travels_as_its_folder(tmp_path):
    (tmp_path / "status.jsonl").write_text(_lines({"id": "a", "status": "ok", "path": "a.jpg"}))
    with StatusIndex(tmp_path) as idx:
        copy = pickle.loads(pickle.dumps(idx))
        assert copy["a"]["path"] == "a.jpg"
        copy.close()
