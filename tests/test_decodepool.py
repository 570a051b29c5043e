"""Decoding in worker processes: same pixels, order and errors as threads; bounded look-ahead; a dead worker."""
from __future__ import annotations

import os
import signal

import numpy as np
import pytest
from PIL import Image

from deepsift.images import crop_uint8
from deepsift.model.engine import decode_plan, prepared_items
from deepsift.sources import SourceError

KILL_COLOUR = (255, 0, 255)


def kill_on_magenta(im: Image.Image) -> np.ndarray:
    """A preprocessor that dies like a crashing decoder (SIGKILL) on an image whose first pixel is magenta."""
    if im.getpixel((0, 0)) == KILL_COLOUR:
        os.kill(os.getpid(), signal.SIGKILL)
    return crop_uint8(im)


def odd_shape(im: Image.Image) -> np.ndarray:
    """A preprocessor whose output does not fit a shared-memory slot (it comes back through the pipe)."""
    return np.asarray(im.resize((10, 7)), dtype=np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("pool")
    rng = np.random.default_rng(3)
    out = []
    for i in range(24):
        w, h = int(rng.integers(100, 400)), int(rng.integers(100, 400))
        p = d / f"{i:02d}.{'jpg' if i % 2 else 'png'}"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(p)
        out.append(str(p))
    (d / "bad.jpg").write_bytes(b"not an image")
    magenta = np.zeros((240, 240, 3), np.uint8)
    magenta[0, 0] = KILL_COLOUR
    Image.fromarray(magenta).save(d / "hostile.png")
    return {"good": out, "bad": str(d / "bad.jpg"), "hostile": str(d / "hostile.png"), "dir": d}


def _run(sources, **kw):
    return [(it.index, it.source, None if it.pixels is None else it.pixels.copy(), it.error)
            for it in prepared_items(sources, max_in_flight=kw.pop("max_in_flight", 8), **kw)]


def test_processes_give_the_threads_pixels_order_and_errors(files):
    im = Image.open(files["good"][0]).convert("RGB")
    sources = [files["good"][0], files["bad"], im, files["good"][1], str(files["dir"] / "missing.png"),
               SourceError("gone/", "gone/: no such folder"), open(files["good"][2], "rb").read(),
               *files["good"][3:12]]
    by_threads = _run(sources, workers=2, decode_in="threads")
    by_processes = _run(sources, workers=2, decode_in="processes")
    assert [r[:2] for r in by_processes] == [r[:2] for r in by_threads] == \
        [(i, r[1]) for i, r in enumerate(by_threads)]
    for (_, _, a, ea), (_, _, b, eb) in zip(by_threads, by_processes):
        assert ea == eb
        assert (a is None and b is None) or (a.dtype == np.uint8 and a.shape == (224, 224, 3) and np.array_equal(a, b))
    errors = [r[3] for r in by_processes]
    assert "not an image" in errors[1] and "no such file" in errors[4] and errors[5] == "gone/: no such folder"
    assert errors[6] is None and by_processes[6][1] == "<bytes 6>"


def test_an_output_that_does_not_fit_a_slot_comes_back_whole(files):
    rows = _run(files["good"][:4], mode=odd_shape, workers=2, decode_in="processes")
    assert all(r[2].shape == (7, 10, 3) and r[2].dtype == np.float32 for r in rows)
    assert np.array_equal(rows[3][2], odd_shape(Image.open(files["good"][3]).convert("RGB")))


def test_a_worker_killed_by_a_hostile_file_is_replaced_and_the_run_goes_on(files):
    good = files["good"][:10]
    sources = good[:3] + [files["hostile"]] + good[3:6] + [files["hostile"]] + good[6:]
    rows = _run(sources, mode=kill_on_magenta, workers=2, decode_in="processes")
    assert [r[1] for r in rows] == sources  # one row per input, in order
    for (_, src, pixels, error) in rows:
        if src == files["hostile"]:
            assert pixels is None and "decoding worker died on this input" in error and "SIGKILL" in error
        else:  # every other input decoded, the ones queued behind the dead worker included
            assert error is None and np.array_equal(pixels, crop_uint8(Image.open(src).convert("RGB")))


def test_look_ahead_stays_bounded_with_processes(files):
    taken = 0

    def endless():
        nonlocal taken
        while True:
            taken += 1
            yield files["good"][taken % 24]

    stream = prepared_items(endless(), workers=2, max_in_flight=8, decode_in="processes")
    first = [next(stream) for _ in range(20)]
    assert all(it.error is None for it in first)
    assert taken <= 20 + 8 + 1  # never more than max_in_flight inputs ahead of what was consumed
    stream.close()


def test_worker_plan_follows_the_machine(monkeypatch):
    import deepsift.model.engine as engine

    monkeypatch.setattr(engine, "usable_cpus", lambda: 16)
    assert decode_plan("auto", "official") == ("processes", 16)
    assert decode_plan(None, kill_on_magenta) == ("threads", 4)  # custom preprocessors stay in threads
    assert decode_plan("auto", "official", count=20) == ("threads", 4)  # a few images start no processes
    assert decode_plan("auto", "official", count=128) == ("processes", 16)
    monkeypatch.setattr(engine, "usable_cpus", lambda: 2)
    assert decode_plan("auto", "official") == ("threads", 2)  # a 2-core laptop: as fast, nothing to start
    assert decode_plan(3, "official") == ("processes", 3)
    assert decode_plan(3, "official", count=1000) == ("processes", 3)
    assert decode_plan(1, "official", count=1) == ("threads", 1)  # one image (a demo request) starts no process
    with pytest.raises(ValueError):
        decode_plan(0, "official")


def test_workers_option_takes_auto_or_a_positive_count(code_model_dir, capsys):
    from deepsift.cli import main
    from deepsift.cliargs import workers_count

    assert workers_count("auto") == "auto" and workers_count("AUTO") == "auto" and workers_count("3") == 3
    for bad in ("0", "-2", "many"):
        capsys.readouterr()
        assert main(["embed", str(code_model_dir / "config.json"), "--model", str(code_model_dir),
                     "--out", "never.parquet", "--workers", bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--workers" in err[0] and "auto" in err[0]


STARTED: list[int] = []


def note_width(im: Image.Image) -> np.ndarray:
    """A preprocessor that notes which image (told by its width: 100 + index) it was given."""
    STARTED.append(im.size[0] - 100)
    return crop_uint8(im)


@pytest.fixture
def sized(tmp_path):
    paths = []
    for i in range(10):
        p = tmp_path / f"{i}.png"
        Image.fromarray(np.full((120, 100 + i, 3), i, np.uint8)).save(p)
        paths.append(str(p))
    STARTED.clear()
    return paths


def test_between_passes_decodes_local_inputs_only_when_the_consumer_waits_for_them(sized):
    stream = prepared_items(sized, mode=note_width, workers=2, max_in_flight=8, between_passes=4)
    got = [next(stream)]
    assert set(STARTED) <= {0, 1, 2, 3}  # the first four only
    got += [next(stream) for _ in range(3)]
    assert sorted(STARTED) == [0, 1, 2, 3]  # the consumer has them all; nothing more runs beside its work
    got.append(next(stream))
    assert 4 in STARTED and set(STARTED) <= set(range(8))
    got += list(stream)
    assert [it.index for it in got] == list(range(10)) and all(it.error is None for it in got)
    assert sorted(STARTED) == list(range(10))
    assert all(np.array_equal(it.pixels, crop_uint8(Image.open(p).convert("RGB"))) for it, p in zip(got, sized))


def test_between_passes_still_fetches_urls_ahead(sized):
    import io
    import threading

    from deepsift.urlfetch import FetchPolicy
    from httpserver import LocalServer

    fetched = threading.Event()
    buf = io.BytesIO()
    Image.fromarray(np.zeros((120, 150, 3), np.uint8)).save(buf, "PNG")

    def image():
        fetched.set()
        return 200, "image/png", buf.getvalue()

    with LocalServer({"/a.png": image}) as srv:
        sources = sized[:4] + [f"{srv.base}/a.png"]
        stream = prepared_items(sources, mode=note_width, workers=2, max_in_flight=8, between_passes=2,
                                url_policy=FetchPolicy(allow_private=True))
        first = next(stream)
        assert fetched.wait(30)  # the URL (fifth) is on its way while local inputs 2 and 3 wait their turn
        assert 2 not in STARTED and 3 not in STARTED
        rest = list(stream)
    assert [it.index for it in [first, *rest]] == [0, 1, 2, 3, 4] and rest[-1].error is None
