"""Metadata signals, shown apart from the pixel verdict: EXIF camera fields, generation parameters, C2PA.

None of these decides anything: metadata is trivially removed or forged. They are clues a person
can weigh: a camera make and exposure, the prompt an AUTOMATIC1111/ComfyUI/InvokeAI install left
in a PNG text chunk, or a signed C2PA manifest.

A C2PA signature that validates says only that the manifest is intact: anyone can make a
certificate that claims to be a camera maker. The signer is *trusted* only when its chain ends at
a root of the configured trust list (``DEEPSIFT_DEMO_C2PA_TRUST_LIST``, a PEM file such as the
C2PA/CAI trust list); otherwise the page says "signed, signer not verified".
"""
from __future__ import annotations

import io
import os
import threading
from typing import Any

from PIL import ExifTags, Image

EXIF_FIELDS = ("Make", "Model", "LensModel", "DateTimeOriginal", "DateTime", "Software", "ExposureTime",
               "FNumber", "ISOSpeedRatings", "FocalLength", "Artist")
"""EXIF tags shown (camera, lens, time, exposure, editing software)."""

GENERATOR_CHUNKS: dict[str, str] = {
    "parameters": "AUTOMATIC1111 / Forge (parameters)",
    "prompt": "ComfyUI (prompt)",
    "workflow": "ComfyUI (workflow)",
    "invokeai_metadata": "InvokeAI (invokeai_metadata)",
    "invokeai_graph": "InvokeAI (invokeai_graph)",
    "sd-metadata": "InvokeAI (sd-metadata)",
    "Dream": "InvokeAI (Dream)",
}
"""Text-chunk keys popular image-generation UIs write, and who writes them."""

MAX_TEXT = 2000
"""Characters of one metadata value returned (prompts and workflows can be huge)."""


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        value = f"{value[0]}/{value[1]}" if value[1] else str(value[0])
    text = str(value).replace("\x00", "").strip()
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + " …"


def exif_fields(im: Image.Image) -> dict[str, str]:
    """The camera-related EXIF fields present (base IFD and the Exif sub-IFD)."""
    try:
        exif = im.getexif()
    except Exception:  # noqa: BLE001 - a broken EXIF block is no signal
        return {}
    tags: dict[str, Any] = {ExifTags.TAGS.get(k, str(k)): v for k, v in exif.items()}
    try:
        tags.update({ExifTags.TAGS.get(k, str(k)): v for k, v in exif.get_ifd(ExifTags.IFD.Exif).items()})
    except Exception:  # noqa: BLE001
        pass
    out = {k: _text(tags[k]) for k in EXIF_FIELDS if k in tags and _text(tags[k])}
    comment = tags.get("UserComment")
    if isinstance(comment, bytes) and b"Steps:" in comment:  # A1111 writes its parameters here in JPEG/WebP
        out["UserComment"] = _text(comment[8:] if comment[:8] in (b"UNICODE\x00", b"ASCII\x00\x00\x00") else comment)
    return out


def generation_chunks(im: Image.Image) -> list[dict[str, str]]:
    """Generation parameters found in text chunks: ``[{key, tool, value}]``."""
    info = dict(getattr(im, "text", None) or {}) if im.format == "PNG" else {}
    info.update({k: v for k, v in im.info.items() if isinstance(v, (str, bytes)) and k not in info})
    found = [{"key": k, "tool": tool, "value": _text(info[k])} for k, tool in GENERATOR_CHUNKS.items() if k in info]
    return found


_trust_cache: dict[str, tuple[float, str]] = {}
_trust_lock = threading.Lock()


def read_trust_list(path: str) -> str:
    """The PEM certificates of a trust list file (re-read when the file changes); ValueError if none."""
    mtime = os.stat(path).st_mtime
    with _trust_lock:
        hit = _trust_cache.get(path)
        if hit and hit[0] == mtime:
            return hit[1]
    with open(path, encoding="ascii", errors="replace") as f:
        text = f.read()
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ValueError(f"{path}: no PEM certificate in this C2PA trust list")
    with _trust_lock:
        _trust_cache[path] = (mtime, text)
    return text


def _reader(c2pa: Any, media_type: str, data: bytes, trust_list: str | None) -> Any:
    # never fetch a "remote manifest": its URL is the uploader's (XMP dcterms:provenance), and fetching it
    # would let any upload make this server request any address, its own network's included
    verify: dict[str, Any] = {"remote_manifest_fetch": False}
    trust = {"trust": {"trust_anchors": read_trust_list(trust_list)}} if trust_list else {}
    if trust_list:
        verify["verify_trust"] = True
    settings = c2pa.Settings.from_dict({"verify": verify, **trust})
    try:
        return c2pa.Reader.try_create(media_type, io.BytesIO(data), context=c2pa.Context(settings))
    finally:
        settings.close()


def c2pa_manifest(data: bytes, media_type: str, trust_list: str | None = None) -> dict[str, Any]:
    """C2PA: ``{present, valid, trusted, state, signer, claim_generator, declares_ai, error}`` for the image
    bytes; ``trusted`` only when the signer chains to a root in the PEM file ``trust_list``."""
    try:
        import c2pa
    except ImportError:
        return {"present": None, "valid": None, "state": None, "error": "c2pa-python is not installed"}
    try:
        reader = _reader(c2pa, media_type, data, trust_list)
    except Exception as exc:  # noqa: BLE001 - c2pa.C2paError and friends: an unreadable manifest
        return {"present": True, "valid": False, "state": "unreadable", "error": str(exc).splitlines()[0][:300]}
    if reader is None:
        return {"present": False, "valid": None, "state": None, "error": None}
    try:
        state = str(reader.get_validation_state() or "")
        import json

        store = json.loads(reader.json())
        active = store.get("active_manifest")
        manifest = store.get("manifests", {}).get(active, {}) if active else {}
        tool = manifest.get("claim_generator") or ", ".join(
            str(i.get("name", "")) for i in manifest.get("claim_generator_info") or [] if isinstance(i, dict))
        sources = [str(a.get("digitalSourceType", "")) for asr in manifest.get("assertions") or []
                   if str(asr.get("label", "")).startswith("c2pa.actions")
                   for a in (asr.get("data") or {}).get("actions") or [] if isinstance(a, dict)]
        sig = manifest.get("signature_info") or {}
        signer = ", ".join(_text(sig[k]) for k in ("common_name", "issuer") if sig.get(k))
        return {"present": True, "valid": state.lower() in ("valid", "trusted"), "trusted": state.lower() == "trusted",
                "state": state or None, "signer": signer or None, "claim_generator": _text(tool) or None,
                "declares_ai": any(s.endswith("trainedAlgorithmicMedia") for s in sources), "error": None}
    except Exception as exc:  # noqa: BLE001
        return {"present": True, "valid": False, "state": "unreadable", "error": str(exc).splitlines()[0][:300]}
    finally:
        try:
            reader.close()
        except Exception:  # noqa: BLE001
            pass


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_PNG_PIXEL_CHUNKS = (b"IDAT", b"fdAT", b"acTL", b"fcTL")


def png_without_pixels(data: bytes) -> bytes | None:
    """The PNG's chunks with its image swapped for one pixel of the same kind, or None when it is not a PNG we can walk.

    Pillow reads text and EXIF chunks that follow the pixels only by decoding the whole image
    (``im.text``, ``im.getexif()``); from this copy it reads the very same chunks, the same way,
    after decoding a single pixel.
    """
    import struct
    import zlib

    from ..pngcrop import SIGNATURE

    if not data.startswith(SIGNATURE):
        return None
    out, pos, n, placed = [SIGNATURE], len(SIGNATURE), len(data), False
    while pos + 12 <= n:
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind, end = data[pos + 4:pos + 8], pos + 12 + length
        if end > n:
            return None
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            if length != 13 or body[9] not in _PNG_CHANNELS:
                return None
            depth, colour = body[8], body[9]
            body = struct.pack(">IIBBBBB", 1, 1, depth, colour, body[10], body[11], 0)
            pixel = (depth * _PNG_CHANNELS[colour] + 7) // 8
            out.append(_chunk(b"IHDR", body))
        elif kind in _PNG_PIXEL_CHUNKS:
            if kind == b"IDAT" and not placed:
                out.append(_chunk(b"IDAT", zlib.compress(b"\x00" + bytes(pixel))))
                placed = True
        else:
            out.append(data[pos:end])
        pos = end
        if kind == b"IEND":
            break
    return b"".join(out) if placed else None


def _chunk(kind: bytes, body: bytes) -> bytes:
    import zlib

    return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")


def metadata_signals(data: bytes, media_type: str, c2pa_trust_list: str | None = None) -> dict[str, Any]:
    """All metadata signals of an image file (its pixels were already decoded safely under the caps).

    A PNG's chunks are read from :func:`png_without_pixels`: its pixels are not decoded again.
    """
    try:
        with Image.open(io.BytesIO(png_without_pixels(data) or data if media_type == "image/png" else data)) as im:
            exif, chunks, turn = exif_fields(im), generation_chunks(im), orientation(im)
    except Exception:  # noqa: BLE001 - the pixel path already reported any decoding problem
        exif, chunks, turn = {}, [], None
    return {"exif": exif, "generation": chunks, "c2pa": c2pa_manifest(data, media_type, c2pa_trust_list),
            "orientation": turn}


def orientation(im: Image.Image) -> int | None:
    """The EXIF Orientation (2-8) when the stored pixels must be turned for display; None when upright."""
    try:
        value = int(im.getexif().get(0x0112) or 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block: shown as stored
        return None
    return value if 2 <= value <= 8 else None
