"""The one safe file-name helper: any text (a record id, a generator or head name) to a name that is
safe inside a folder and distinct for distinct texts.
"""
from __future__ import annotations

import hashlib
import re

MAX_NAME_LENGTH = 120
"""Longest name kept as is; an escaped name is never longer either."""

_KEEP = {True: re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*"), False: re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")}
_UNSAFE = {True: re.compile(r"[^A-Za-z0-9_.-]"), False: re.compile(r"[^A-Za-z0-9_-]")}


def safe_name(text: str, *, dots: bool = True, max_length: int = MAX_NAME_LENGTH) -> str:
    """A file-name stem for ``text`` that cannot leave its folder, and differs for different texts.

    ``text`` is kept when it is already safe: letters, digits, ``_``, ``-`` (and ``.`` unless
    ``dots=False``), starting with a letter or digit, at most ``max_length`` characters. Any other
    text becomes a readable prefix (each unsafe character as ``_``) plus ``~`` and 16 hex digits of
    its SHA-256: kept names never contain ``~``, so an escaped name never equals a kept one, and
    ``a/b`` and ``a_b`` (or ``a.b`` with ``dots=False``) get different names.
    """
    if len(text) <= max_length and _KEEP[dots].fullmatch(text):
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    prefix = _UNSAFE[dots].sub("_", text)[: max(max_length - 20, 8)].lstrip("._-")
    return f"{prefix}~{digest}" if prefix else digest


def is_safe_name(text: str, *, dots: bool = True, max_length: int = MAX_NAME_LENGTH) -> bool:
    """True when :func:`safe_name` keeps ``text`` as it is (a name that needs no escaping).

    For folders that refuse rather than rename (the server's storage: a part that would need
    escaping there is a bug or an attack, not a name to fix).
    """
    return bool(text) and safe_name(text, dots=dots, max_length=max_length) == text
