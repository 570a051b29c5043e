"""The detect form, read by the route itself: after the rate limits, in memory, under the demo's caps.

FastAPI would parse a route's form before any dependency runs (so a client over its limit still
uploaded everything) and Starlette spools every file over 1 MiB to a temporary file on disk. The
detect route takes no body parameters; it checks its limits first, then reads the form with
:func:`read_form`, where every file stays in memory: the body itself is capped by the demo's own
limit (``BodyLimit`` with ``app.state.body_limits``: ``max_images x max_image_mb`` + 1 MiB, from
Content-Length at once and while streaming), so nothing is ever written to disk.
"""
from __future__ import annotations

from typing import Any

from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import FormParser, MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request

from ..exceptions import InvalidInputError

MAX_FIELD_BYTES = 16 << 10
"""Largest text field (an image URL, a flag)."""

BODY_SCHEMA: dict[str, Any] = {
    "required": False,
    "content": {"multipart/form-data": {"schema": {"type": "object", "properties": {
        "files": {"type": "array", "items": {"type": "string", "format": "binary"},
                  "description": "image files; repeat the field for several"},
        "url": {"type": "array", "items": {"type": "string"},
                "description": "image URL (http/https, public addresses); repeatable"},
        "heatmap": {"type": "boolean", "default": False, "description": "also score local crops into a heatmap"},
        "metadata": {"type": "boolean", "default": True, "description": "also read EXIF, PNG text chunks and C2PA"},
        "preview": {"type": "boolean", "default": False,
                    "description": "also return a small JPEG preview as a data: URL"},
    }}}},
}
"""The OpenAPI description of the form (``openapi_extra`` of the route: FastAPI does not see its parameters)."""

_TRUE, _FALSE = ("true", "1", "on", "yes"), ("false", "0", "off", "no", "")


async def read_form(request: Request, max_files: int, max_bytes: int) -> FormData:
    """The multipart (or URL-encoded) form of ``request``, files in memory; no form at all is an empty one.

    More than ``max_files`` files is a 422 as soon as the next file starts; a malformed body a 400.
    """
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if kind == "multipart/form-data":
            parser = MultiPartParser(request.headers, request.stream(), max_files=max_files, max_fields=64,
                                     max_part_size=MAX_FIELD_BYTES)
            parser.spool_max_size = max_bytes + 1  # in memory: the body never gets this large (BodyLimit)
            return await parser.parse()
        if kind == "application/x-www-form-urlencoded":
            return await FormParser(request.headers, request.stream()).parse()
    except MultiPartException as exc:
        if str(exc).startswith("Too many files"):
            raise InvalidInputError(f"more than {max_files} files: at most {max_files} images per request") from None
        raise HTTPException(400, f"the body is not valid multipart/form-data: {exc}") from None
    except ClientDisconnect:
        raise HTTPException(400, "the client went away before sending its whole body") from None
    return FormData()


def flag(form: FormData, name: str, default: bool) -> bool:
    """A boolean form field (true/false, 1/0, on/off, yes/no); InvalidInputError otherwise."""
    value = form.get(name)
    if value is None:
        return default
    if not isinstance(value, str):
        raise InvalidInputError(f"{name}: expected true or false, got a file")
    text = value.strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise InvalidInputError(f"{name}: expected true or false, got {value[:40]!r}")


def files_and_urls(form: FormData) -> tuple[list[UploadFile], list[str]]:
    """The form's uploaded files (``files`` parts) and non-empty image URLs (``url`` fields)."""
    files = []
    for f in form.getlist("files"):
        if isinstance(f, str):
            if f:
                raise InvalidInputError("files: expected a file part (multipart/form-data with a filename)")
            continue
        files.append(f)
    urls = [u.strip() for u in form.getlist("url") if isinstance(u, str) and u.strip()]
    return files, urls
