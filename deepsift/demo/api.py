"""The demo's JSON API: ``POST /api/v1/detect`` and the quiz (``/api/v1/quiz/...``). The pages are its clients."""
from __future__ import annotations

import asyncio
import functools
from typing import Any, Callable

from fastapi import APIRouter, Depends, Request, UploadFile
from fastapi.responses import JSONResponse, Response

from ..exceptions import DeepsiftError, InvalidInputError
from ..server.deps import CsrfProtect, ReadDbSession, charge, csrf_needed, csrf_verify, rate_limit
from ..server.security import CSRF_FIELD, CSRF_HEADER, client_address
from ..urlfetch import afetch_url
from . import quiz as q
from .bounds import BusyError
from .engine import DemoEngine, public_model_name
from .inputs import Decoded, decode_pixels, prepare, read_capped, sniff
from .metadata import metadata_signals
from .names import display_name
from .upload import BODY_SCHEMA, files_and_urls, flag, read_form
from .schemas import DetectError, DetectorInfo, DetectResponse, Error, GeneratorStats, Guess, Reveal, RoundOut, Tally

E = {400: {"model": Error, "description": "a body that is not valid multipart/form data"},
     403: {"model": Error, "description": "a browser session without its CSRF token (X-CSRF-Token)"},
     413: {"model": Error, "description": "request body over the server's upload limit"},
     422: {"model": DetectError, "description": "no input, too many inputs, or not one input could be read "
                                                 "(each result says why)"},
     429: {"model": Error, "description": "rate limited"},
     503: {"model": Error, "description": "the detector (or the quiz dataset) is not available, or the server is "
                                         "busy decoding other images (with Retry-After)"}}
router = APIRouter(prefix="/api/v1", tags=["demo"], dependencies=[Depends(rate_limit("api", "api_rate"))])


def engine_of(request: Request) -> DemoEngine:
    """The app's demo engine (detector + URL policy)."""
    return request.app.state.demo.engine


def _settings(request: Request):  # type: ignore[no-untyped-def]
    return request.app.state.demo.settings


@router.get("/detector", response_model=DetectorInfo, responses={503: E[503]})
def detector_info(request: Request) -> DetectorInfo:
    """The model, heads, threshold and unsure band that answer, and the input caps."""
    s = _settings(request)
    return DetectorInfo(**engine_of(request).info(), max_images=s.max_images, max_image_mb=s.max_image_mb,
                        max_megapixels=s.max_megapixels)


@router.post("/detect", response_model=DetectResponse, responses=E, openapi_extra={"requestBody": BODY_SCHEMA})
async def detect(request: Request) -> Any:
    """Real or AI-generated? One or many images (multipart ``files`` parts and/or ``url`` fields).

    Form fields: ``files`` (repeatable), ``url`` (repeatable), ``heatmap``, ``metadata`` (default
    true), ``preview``. The fields ``source`` .. ``verdict`` equal
    ``deepsift detect --format jsonl --backend torch`` on the same file and model. An input that cannot be read has its ``error`` (the others are
    answered); when no input can be read the answer is a 422 with the reason.

    Limits, all checked before the body is read: requests per minute (``api_rate``), images per
    minute (``detect_rate``; each request counts one image before its body and the rest after),
    the body size. Over the pixel budget a request queues briefly, then gets a 503.
    """
    s = _settings(request)
    eng = engine_of(request)
    bounds = request.app.state.demo.bounds
    settings = request.app.state.settings
    what = "images analysed"
    charge(request, "detect", s.image_rate, 1, what=what)  # before the body: one image at least
    if csrf_needed(request) and request.headers.get(CSRF_HEADER) is not None:
        csrf_verify(request, request.headers.get(CSRF_HEADER))
    form = await read_form(request, s.max_images, s.max_body_bytes)
    try:
        if csrf_needed(request) and request.headers.get(CSRF_HEADER) is None:
            token = form.get(CSRF_FIELD)
            csrf_verify(request, token if isinstance(token, str) else None)
        uploads, urls = files_and_urls(form)
        heatmap, metadata, preview = flag(form, "heatmap", False), flag(form, "metadata", True), \
            flag(form, "preview", False)
        n = len(uploads) + len(urls)
        if n == 0:
            raise InvalidInputError("send at least one image (a 'files' part) or an image URL (a 'url' field)")
        if n > s.max_images:
            raise InvalidInputError(f"{n} inputs: at most {s.max_images} images per request")
        if n > 1:
            charge(request, "detect", s.image_rate, n - 1, what=what)
        # a missing model is a 503 before any work; loading it blocks (a pool thread), a loaded one does not
        det = eng.detector() if eng.loaded else await bounds.run(eng.detector)
        visitor = client_address(request, settings)
        jobs = [(upload_name(f), f) for f in uploads] + [(u[:500], u) for u in urls]
        with bounds.url_slots(visitor, len(urls)):
            loaded = await _all([_load(request, name, src, det, heatmap, preview) for name, src in jobs])
    finally:
        await form.close()
    good = [d for d in loaded if isinstance(d, Decoded)]
    # metadata on the pool while the forward pass runs
    signals = [asyncio.ensure_future(bounds.run(metadata_signals, d.data, d.media_type, s.c2pa_trust_list)) for d in good] \
        if metadata else []
    answers = iter(await eng.aanalyse(good))
    extras = {id(d): {"metadata": m} for d, m in zip(good, await asyncio.gather(*signals))}
    if s.keep_uploads:
        kept = [d for d, (_, src) in zip(loaded, jobs) if isinstance(d, Decoded) and not isinstance(src, str)]
        for d in kept:
            await bounds.run(request.app.state.storage.save_bytes, d.data, "demo-uploads", "." + d.format.lower())
    bounds.settle()
    results = []
    for (name, _), d in zip(jobs, loaded):
        if isinstance(d, str):
            results.append({"source": name, "verdict": "error", "label": None, "probability": None, "score": None,
                            "head": None, "generator": None, "error": d, "band": "error"})
            continue
        r = next(answers)
        r.update(format=d.format, width=d.size[0], height=d.size[1])
        if r["error"] is None:
            r.update(extras.get(id(d), {}), **({"preview": d.preview} if preview else {}))
        r["generator_name"] = display_name(r.get("generator"), s.generator_names)
        results.append(r)
    info = {"model": public_model_name(s.model), "classifier": det.classifier, "threshold": det.decision_threshold,
            "unsure_band": list(s.unsure_band) if s.unsure_band else None}
    from ..decision import rule_text

    body = DetectResponse(**info, rule=rule_text(det.decision_threshold), results=results)
    if all(r.error is not None for r in body.results):
        first = body.results[0].error or "no input could be read"
        return JSONResponse({"detail": first if len(results) == 1 else f"no input could be read; first: {first}",
                             "results": [r.model_dump() for r in body.results]}, status_code=422)
    return body


async def _all(coros: list) -> list:
    """Run ``coros`` concurrently; if one raises, the others are cancelled (their budget given back)."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def upload_name(f: UploadFile) -> str:
    """The name an upload is answered under (its file name, cut to 200 characters)."""
    return (f.filename or "upload").replace("\x00", "")[:200]


async def _load(request: Request, name: str, src: UploadFile | str, det: Any, heatmap: bool,
                preview: bool) -> Decoded | str:
    """One input read, fetched (async: no thread waits on the network) and prepared under the pixel
    budget on the demo's pool; a string says why it cannot be answered."""
    s = _settings(request)
    bounds = request.app.state.demo.bounds
    try:
        if isinstance(src, str):
            data = await afetch_url(src, policy=engine_of(request).policy, deadline=s.url_timeout,
                                    max_bytes=s.max_image_bytes)
        else:
            data = read_capped(src.file, name, s.max_image_bytes)  # in memory: no thread needed
        job = functools.partial(prepare, data, name, s.max_pixels, s.max_image_bytes, det.preprocessing,
                                heatmap_grid=s.heatmap_grid if heatmap else 0, preview=preview,
                                reduce_to=s.heatmap_pixels)
        cost = functools.partial(decode_pixels, heatmap=heatmap, preview=preview, mode=det.preprocessing,
                                 reduce_to=s.heatmap_pixels)
        # one pool job sniffs, and decodes at once when its pixels are free (the usual case: no second hop)
        fmt, size, tried, done = await bounds.run(_sniff_then_decode, bounds, job, cost, data, name, s.max_pixels)
        if not tried:  # the budget was busy: queue for it (a partial decode first; None: it must be decoded whole)
            first = cost(fmt, size)
            async with bounds.pixels(first):
                done = await bounds.run(functools.partial(job, allow_whole=first >= cost(fmt, size, whole=True),
                                                          sniffed=(fmt, size)))
        if done is None:
            async with bounds.pixels(cost(fmt, size, whole=True)):
                done = await bounds.run(functools.partial(job, sniffed=(fmt, size)))
        return done
    except BusyError:
        raise
    except DeepsiftError as exc:
        return str(exc) if str(exc).startswith(name) else f"{name}: {exc}"
    except Exception as exc:  # noqa: BLE001 - one odd input never takes the request down
        return f"{name}: {type(exc).__name__}: {exc}"


def _sniff_then_decode(bounds: Any, job: Callable[..., Decoded | None], cost: Callable[..., int], data: bytes,
                       name: str, max_pixels: int) -> tuple[str, tuple[int, int], bool, Decoded | None]:
    """On the pool: sniff ``data``, then run ``job`` (a partial decode where one can be) if its pixels are free
    now and nobody waits; (format, size, whether it ran, its result)."""
    fmt, size = sniff(data, name, max_pixels)
    with bounds.pixels_now(cost(fmt, size)) as held:
        if held:
            return fmt, size, True, job(allow_whole=cost(fmt, size) >= cost(fmt, size, whole=True),
                                        sniffed=(fmt, size))
    return fmt, size, False, None


# -- quiz ------------------------------------------------------------------------------------------
def _visitor(request: Request) -> str | None:
    v = request.cookies.get(q.VISITOR_COOKIE)
    return v if v and 16 <= len(v) <= 64 and v.replace("-", "").replace("_", "").isalnum() else None


def _set_visitor(request: Request, response: Response, visitor: str) -> None:
    from ..server.security import cookie_secure

    response.set_cookie(q.VISITOR_COOKIE, visitor, max_age=365 * 86400, httponly=True, samesite="strict",
                        secure=cookie_secure(request, request.app.state.settings), path="/")


@router.post("/quiz/rounds", response_model=RoundOut, status_code=201, dependencies=[CsrfProtect],
             responses={403: E[403], 429: E[429], 503: E[503]})
async def new_round(request: Request, response: Response) -> RoundOut:
    """Start a round: an image from the quiz dataset (its truth stays on the server until you guess)."""
    s, known, demo, db = _settings(request), _visitor(request), request.app.state.demo, request.app.state.db
    address = client_address(request, request.app.state.settings)
    await demo.bounds.run(q.admit, request.app.state.rate_limiter, address, s, known is None)
    visitor = known or q.new_visitor()
    smp = await demo.bounds.run(demo.quiz.pick)
    ans = await demo.quiz.aanswer(smp.id, engine_of(request), demo.bounds)  # no thread waits for the detector
    row_id, tally = await demo.bounds.run(_store_round, db, smp, ans, visitor, s.quiz_round_ttl)
    _set_visitor(request, response, visitor)
    return RoundOut(id=row_id, image_url=f"/api/v1/quiz/rounds/{row_id}/image", tally=Tally(**tally))


def _store_round(db: Any, smp: Any, ans: tuple[int, float] | None, visitor: str, ttl: float) -> tuple[str, dict]:
    """Store the round and read the visitor's tally (on the demo's pool)."""
    row_id = q.store_round(db, smp, ans, visitor, ttl).id
    with db.session() as session:
        return row_id, q.tally(session, visitor)


@router.get("/quiz/rounds/{round_id}/image", responses={200: {"content": {"image/jpeg": {}}}, 404: {"model": Error}},
            response_class=Response)
async def round_image(request: Request, round_id: str) -> Response:
    """The round's image: a square JPEG of the same size for every image, without metadata."""
    s, demo = _settings(request), request.app.state.demo
    jpeg = await demo.bounds.run(_round_jpeg, request.app.state.db, demo.quiz, round_id, s.quiz_image_size,
                                 s.max_pixels)
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, no-store"})


def _round_jpeg(db: Any, quiz: q.QuizSet, round_id: str, size: int, max_pixels: int) -> bytes:
    """Look the round up and make its image (on the demo's pool: pages never wait behind it)."""
    with db.session() as session:
        row = q.get_round(session, round_id)
        item, rid = row.item, row.id
    return quiz.image_jpeg(item, rid, size, max_pixels)


@router.post("/quiz/rounds/{round_id}/guess", response_model=Reveal, dependencies=[CsrfProtect],
             responses={403: E[403], 404: {"model": Error}, 409: {"model": Error, "description": "already answered"},
                        422: {"model": Error, "description": "guess is not 'real' or 'fake'"}})
def guess(request: Request, round_id: str, body: Guess, session: ReadDbSession) -> Reveal:
    """Store your guess (once); the answer reveals the truth, the detector's answer and your tally."""
    visitor = _visitor(request)
    row = q.guess(request.app.state.db, round_id, visitor, 1 if body.guess == "fake" else 0,
                  _settings(request).quiz_round_ttl)
    word = {0: "real", 1: "fake"}
    det = None if row.detector_label is None else word[row.detector_label]
    return Reveal(id=row.id, guess=body.guess, truth=word[row.truth], generator=row.generator if row.truth else None,
                  generator_name=display_name(row.generator, _settings(request).generator_names) if row.truth else None,
                  detector=det, detector_probability=row.detector_probability, you_right=row.guess == row.truth,
                  detector_right=None if det is None else row.detector_label == row.truth,
                  tally=Tally(**q.tally(session, visitor)))


@router.get("/quiz/tally", response_model=Tally)
def my_tally(request: Request, session: ReadDbSession) -> Tally:
    """Your running tally (rounds answered, your right guesses, the detector's)."""
    return Tally(**q.tally(session, _visitor(request)))


@router.get("/quiz/stats", response_model=list[GeneratorStats])
def stats(request: Request, session: ReadDbSession) -> list[GeneratorStats]:
    """Over all visitors, per generator ('real' for real images): how often people and the detector were right."""
    names = _settings(request).generator_names
    return [GeneratorStats(**r, name=display_name(r["generator"], names)) for r in q.statistics(session)]
