"""Results files: never torn (temporary file + rename; a partial file that says so), names that are not UTF-8."""
from __future__ import annotations

import csv
import io
import json
import os
import select
import signal
import subprocess
import sys
import threading

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from deepsift.cli import main
from deepsift.output import PARTIAL_SUFFIX, open_rows, printable
from waitkit import FolderWatch

ODD = os.fsdecode(b"caf\xe9-\xff.png")  # not UTF-8: arrives from the file system as surrogate escapes
ESCAPED = "caf\\xe9-\\xff.png"


def test_printable_escapes_only_what_is_not_utf8():
    assert printable(ODD) == ESCAPED
    assert printable("naïve 🐈.png") == "naïve 🐈.png" and printable("plain.png") == "plain.png"
    assert printable("\ud800") == "\\ud800"  # a lone surrogate no file name makes


def _read(fmt, text):
    if fmt == "jsonl":
        return [json.loads(x) for x in text.splitlines()]
    if fmt == "json":
        return json.loads(text)
    if fmt == "csv":
        return list(csv.DictReader(io.StringIO(text)))
    return [dict(source=line.split()[0]) for line in text.splitlines()[1:]]


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "table"])
def test_names_that_are_not_utf8_are_escaped_the_same_way_in_every_format(tmp_path, fmt):
    rows = [{"source": "a.png", "error": None}, {"source": ODD, "error": f"{ODD}: empty file (0 bytes)"},
            {"source": "b.png", "error": None}]
    out = tmp_path / f"res.{fmt}"
    with open_rows(str(out), fmt, ["source", "error"]) as writer:
        for r in rows:
            writer.write(r)
    got = _read(fmt, out.read_text(encoding="utf-8"))
    assert [r["source"] for r in got] == ["a.png", ESCAPED, "b.png"]  # every row, the odd one escaped
    if fmt != "table":
        assert got[1]["error"] == f"{ESCAPED}: empty file (0 bytes)"


@pytest.fixture(scope="module")
def heads(code_model_dir, tmp_path_factory):
    from deepsift.model.headset import save_headset
    from deepsift.model.heads import make_head

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 192)), np.r_[np.zeros(20), np.ones(20)]
    out = tmp_path_factory.mktemp("heads")
    save_headset({"linear": make_head("linear").fit(X, y)}, out)
    return out


@pytest.fixture(scope="module")
def odd_folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("odd")
    for i, name in enumerate(["a.png", ODD, "b.png"]):
        Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(os.path.join(d, name), format="PNG")
    return d


@pytest.mark.parametrize("fmt", ["csv", "table", "jsonl"])
def test_detect_writes_every_row_for_a_folder_with_a_name_that_is_not_utf8(code_model_dir, heads, odd_folder,
                                                                           tmp_path, fmt, capsys):
    out = tmp_path / f"res.{fmt}"
    rc = main(["detect", str(odd_folder), "--model", str(code_model_dir), "--heads", str(heads), "--format", fmt,
               "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    got = _read(fmt, out.read_text(encoding="utf-8"))
    assert [os.path.basename(r["source"]) for r in got] == ["a.png", "b.png", ESCAPED]
    assert not [p for p in tmp_path.iterdir() if p.name != out.name]  # no temporary left behind


def test_embed_keeps_the_batch_with_a_name_that_is_not_utf8(code_model_dir, odd_folder, tmp_path):
    out = tmp_path / "emb.parquet"
    assert main(["embed", str(odd_folder), "--model", str(code_model_dir), "--out", str(out)]) == 0
    table = pq.read_table(out)
    assert [os.path.basename(s) for s in table.column("source").to_pylist()] == ["a.png", "b.png", ESCAPED]
    assert table.column("embedding").null_count == 0


def test_names_from_stdin_that_are_not_utf8(code_model_dir, heads, odd_folder, tmp_path):
    listing = os.fsencode(os.path.join(odd_folder, ODD)) + b"\n" + os.fsencode(str(odd_folder / "a.png")) + b"\n"
    res = subprocess.run([sys.executable, "-m", "deepsift", "detect", "-", "--model", str(code_model_dir),
                          "--heads", str(heads), "--format", "jsonl"], input=listing, capture_output=True,
                         timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONIOENCODING": "utf-8"})
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    rows = [json.loads(x) for x in res.stdout.decode().splitlines()]
    assert [os.path.basename(r["source"]) for r in rows] == [ESCAPED, "a.png"] and rows[0]["verdict"] != "error"


# -- interrupted outputs ------------------------------------------------------------------------
N_WRITTEN = 12


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    d = tmp_path_factory.mktemp("many")
    for i in range(40):
        Image.fromarray(np.full((24, 24, 3), i * 5, np.uint8)).save(d / f"{i:04d}.png")
    return sorted(d.iterdir())


def _interrupted_detect(code_model_dir, heads, many, out, fmt, sig):
    """Run ``detect -`` fed names through a pipe kept open, wait for rows, then send ``sig``.

    ``out`` None: the rows go to stdout (a file read back here). Returns (exit code, stderr, stdout).
    """
    stdout_path = many[0].parent.parent / f"stdout-{fmt}-{int(sig)}-{'file' if out else 'stdout'}.txt"
    args = ["--out", str(out)] if out is not None else []
    watch = FolderWatch(stdout_path.parent if out is None else out.parent)
    with open(stdout_path, "wb") as stdout:
        proc = subprocess.Popen([sys.executable, "-m", "deepsift", "detect", "-", "--model", str(code_model_dir),
                                 "--heads", str(heads), "--format", fmt, *args, "--batch-size", "1",
                                 "--workers", "1"], stdin=subprocess.PIPE, stdout=stdout,
                                stderr=subprocess.PIPE, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                                # Ctrl-C reaches it as in a terminal, even when the suite itself runs in the
                                # background (`cmd &` without job control starts children with SIGINT ignored)
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        # the engine looks 16 inputs ahead: 16 + N names give N rows, then it waits on the pipe. The signal is
        # sent as soon as row N is on disk (woken by its write), maybe before the writer has counted it: a row
        # and its count are one step for signals, so every row on disk is kept
        proc.stdin.write(b"".join(os.fsencode(str(p)) + b"\n" for p in many[: 16 + N_WRITTEN]))
        proc.stdin.flush()
        lines_wanted = N_WRITTEN + (1 if fmt == "csv" else 0) + (1 if fmt == "json" else 0)

        def rows_written() -> bool:
            if out is None:
                written = stdout_path.read_bytes()
            else:
                tmp = [p for p in out.parent.iterdir()
                       if p.name.startswith(f".{out.name}.") and p.name.endswith(".tmp")]
                written = tmp[0].read_bytes() if tmp else b""
            return written.count(b"\n") >= lines_wanted

        try:  # woken by each write to the folder of the rows (inotify), or by detect ending
            watch.wait(rows_written, 240, f"detect to write {N_WRITTEN} rows", pid=proc.pid)
        except RuntimeError:
            raise AssertionError(proc.stderr.read().decode()) from None
        proc.send_signal(sig)
        proc.wait(120)
    finally:
        watch.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdin.close()
    return proc.returncode, proc.stderr.read().decode(), stdout_path.read_text()


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_signal_landing_between_a_rows_flush_and_its_count_keeps_the_row(tmp_path, fmt):
    """Ctrl-C arriving right after a row reached the file, before the writer counted it: the row is kept.

    Sent to the process with another thread alive (as the engine's are), which the kernel may hand it to;
    the hook returns once the signal has been received (Python's wake-up fd), so the race is decided."""
    out = tmp_path / f"res.{fmt}"
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # a background suite may ignore SIGINT
    done = threading.Event()
    other = threading.Thread(target=done.wait)
    other.start()
    woken, wake = os.pipe()
    os.set_blocking(wake, False)
    wakeup_before = signal.set_wakeup_fd(wake)
    try:
        with pytest.raises(KeyboardInterrupt), open_rows(str(out), fmt, ["source", "error"]) as writer:
            writer.write({"source": "a.png", "error": None})
            flush = writer.stream.flush

            def flush_then_ctrl_c() -> None:  # once
                writer.stream.flush = flush  # type: ignore[method-assign]
                flush()
                os.kill(os.getpid(), signal.SIGINT)
                assert select.select([woken], [], [], 30)[0], "the signal never arrived"

            writer.stream.flush = flush_then_ctrl_c  # type: ignore[method-assign]
            writer.write({"source": "b.png", "error": None})
            writer.write({"source": "c.png", "error": None})
    finally:
        signal.signal(signal.SIGINT, before)
        signal.set_wakeup_fd(wakeup_before)
        os.close(woken), os.close(wake)
        done.set()
        other.join()
    text = out.with_name(out.name + PARTIAL_SUFFIX).read_text()
    rows = _read(fmt, "".join(text.splitlines(keepends=True)[:-1]))
    assert [r["source"] for r in rows] == ["a.png", "b.png"]
    assert text.splitlines()[-1] == ('{"partial": true, "complete_rows": 2, "reason": "interrupted (SIGINT)"}'
                                     if fmt == "jsonl" else "# partial: 2 complete rows; interrupted (SIGINT)")
    assert not out.exists()


EXIT_CODE = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + the signal number, as a shell reports it


@pytest.mark.parametrize("fmt, sig", [("csv", signal.SIGTERM), ("jsonl", signal.SIGINT), ("json", signal.SIGTERM)])
def test_an_interrupted_detect_keeps_a_valid_partial_file_or_nothing(code_model_dir, heads, many, tmp_path, fmt, sig):
    out = tmp_path / f"res.{fmt}"
    out.write_text("an earlier, complete result\n")
    rc, err, _ = _interrupted_detect(code_model_dir, heads, many, out, fmt, sig)
    assert rc == EXIT_CODE[sig] and "Traceback" not in err, err
    assert out.read_text() == "an earlier, complete result\n"  # never replaced by an incomplete one
    partial = out.with_name(out.name + PARTIAL_SUFFIX)
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    if fmt == "json":  # a JSON document cannot be cut between rows: nothing is kept
        assert leftovers == [out.name] and "nothing was written" in err
        return
    assert leftovers == sorted([out.name, partial.name]), leftovers
    text = partial.read_text()
    assert text.endswith("\n")
    reason = "SIGTERM" if sig == signal.SIGTERM else "SIGINT"
    if fmt == "jsonl":
        lines = [json.loads(x) for x in text.splitlines()]  # every line, the last one too
        rows, last = lines[:-1], lines[-1]
        assert last == {"partial": True, "complete_rows": len(rows), "reason": f"interrupted ({reason})"}
    else:
        lines = text.splitlines()
        assert lines[-1] == f"# partial: {len(lines) - 2} complete rows; interrupted ({reason})"
        rows = list(csv.DictReader(io.StringIO("\n".join(lines[:-1]))))
        assert all(None not in r and r["verdict"] in ("real", "fake") for r in rows)
    assert len(rows) >= N_WRITTEN
    assert [os.path.basename(r["source"]) for r in rows] == [p.name for p in many[: len(rows)]]
    assert f"{len(rows)} complete row(s) before it are kept in {partial}" in err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_an_interrupted_detect_to_stdout_exits_128_plus_the_signal_after_whole_rows(code_model_dir, heads, many,
                                                                                   sig):
    """Without --out no output file holds SIGTERM: the command itself unwinds (143; Ctrl-C 130), one line."""
    rc, err, text = _interrupted_detect(code_model_dir, heads, many, None, "jsonl", sig)
    assert rc == EXIT_CODE[sig] and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == ("deepsift: terminated (SIGTERM)" if sig == signal.SIGTERM
                                            else "deepsift: interrupted")
    assert text.endswith("\n")
    rows = [json.loads(x) for x in text.splitlines()]  # every row whole
    assert len(rows) >= N_WRITTEN and all(r["verdict"] in ("real", "fake") for r in rows)


@pytest.mark.skipif(os.geteuid() != 0, reason="making a character device needs root")
def test_out_to_a_character_device_writes_through_it_and_never_replaces_it(code_model_dir, heads, odd_folder,
                                                                            tmp_path):
    """``--out /dev/null`` must not rename a temporary file over the device (it once did, breaking /dev/null)."""
    import stat

    null = tmp_path / "null"
    os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a second /dev/null, in the test's folder
    rc = main(["detect", str(odd_folder), "--model", str(code_model_dir), "--heads", str(heads),
               "--format", "jsonl", "--out", str(null), "--quiet"])
    assert rc == 0
    assert stat.S_ISCHR(os.stat(null).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary left


def test_out_to_a_fifo_streams_the_rows_through_it(tmp_path):
    """A FIFO target is written in place (a reader gets every row) and is still a FIFO afterwards."""
    import stat

    fifo = tmp_path / "rows.fifo"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.extend(open(fifo, encoding="utf-8").read().splitlines()), daemon=True)
    reader.start()
    with open_rows(str(fifo), "jsonl", ["source", "probability"]) as w:
        for i in range(3):
            w.write({"source": f"{i}.png", "probability": i / 4})
    reader.join(timeout=60)
    assert [json.loads(line)["source"] for line in got] == ["0.png", "1.png", "2.png"]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["rows.fifo"]


def test_a_table_is_sized_to_its_content():
    """Columns as wide as their longest cell or header (not a fixed 40/10), rows aligned."""
    import io

    from deepsift.output import RowWriter

    buf = io.StringIO()
    w = RowWriter(buf, "table", ["source", "verdict", "probability"])
    w.write({"source": "a.png", "verdict": "fake", "probability": 0.9})
    w.write({"source": "photos/longer-name.jpg", "verdict": "real", "probability": 0.12})
    w.close()
    lines = buf.getvalue().splitlines()
    col = len("photos/longer-name.jpg") + 2  # the longest source, then the two-space gap
    assert lines[0].index("verdict") == col and lines[0].index("probability") == col + len("verdict") + 2
    assert lines[1][col:].startswith("fake ") and lines[2][col:].startswith("real ")
    assert lines[1][col + 9:] == "0.9000" and lines[2][col + 9:] == "0.1200"
    empty = io.StringIO()
    RowWriter(empty, "table", ["source"]).close()
    assert empty.getvalue() == ""
