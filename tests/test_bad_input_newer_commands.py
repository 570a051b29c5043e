"""Bad input in the newer commands (issue 19, items 7-12): one line, nothing lost, nothing hangs."""
from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from deepsift.cli import main  # noqa: E402

LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(8))


def _fails_within(seconds: float, fn) -> object:
    """Run ``fn`` in a thread; the test fails (instead of hanging) when it has not returned in time."""
    box: dict = {}
    done = threading.Event()

    def run() -> None:
        try:
            box["value"] = fn()
        finally:
            done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(seconds), "still running: it hangs"
    return box.get("value")


@pytest.mark.parametrize("case", ["aliases", "huge", "fifo"])
def test_a_config_file_is_bounded(tmp_path: Path, capsys, case: str) -> None:
    """A 700-byte YAML of nested aliases, a 2 MiB file and a FIFO: one usage line each, at once."""
    cfg = tmp_path / "c.yaml"
    if case == "aliases":
        cfg.write_text(LAUGHS)
        assert len(LAUGHS) < 800
    elif case == "huge":
        cfg.write_text("# padding\n" * 220_000)
    else:
        os.mkfifo(cfg)
    out = tmp_path / "out"
    rc = _fails_within(20, lambda: main(["train", "--data", str(tmp_path), "--real", str(tmp_path), "--out", str(out),
                                         "--config", str(cfg)]))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert {"aliases": "aliases", "huge": "larger than 1024 KiB", "fifo": "not a regular file"}[case] in err[0]
    assert not out.exists()
