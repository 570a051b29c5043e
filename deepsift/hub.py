"""Hugging Face hub and libraries: hub ids versus paths, failing at once when the hub is out of
reach, and loading models without the libraries' chatter.

A source is a hub id when it has the form ``owner/name`` and no such local file or folder exists;
anything else that does not exist is a missing path (:func:`deepsift.exceptions.input_not_found`).
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import re
import warnings
from typing import Iterator

_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")


def looks_like_hub_id(text: str | os.PathLike) -> bool:
    """Whether ``text`` has the form of a hub id (``owner/name``), e.g. ``aimagelab/CoDE``."""
    return isinstance(text, str) and _HUB_ID.fullmatch(text) is not None and not text.startswith(".")


@contextlib.contextmanager
def quiet_loading(*libraries: str) -> Iterator[None]:
    """Load models with ``libraries`` ("transformers", "diffusers") without their bars and notices, unless verbose.

    transformers and diffusers print a bar per loaded component and notices such as "install
    accelerate"; they say nothing a deepsift user can act on. ``--verbose`` keeps them.
    """
    from .output import console_level

    if console_level() > 0:
        yield
        return
    restore = []
    for name in libraries:
        if importlib.util.find_spec(name) is None:
            continue
        logging_mod = importlib.import_module(f"{name}.utils.logging")
        bars, verbosity = logging_mod.is_progress_bar_enabled(), logging_mod.get_verbosity()
        logging_mod.disable_progress_bar()
        logging_mod.set_verbosity_error()
        restore.append((logging_mod, bars, verbosity))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logging_mod, bars, verbosity in restore:
            logging_mod.set_verbosity(verbosity)
            if bars:
                logging_mod.enable_progress_bar()


HUB_PROBE_TIMEOUT_S = 3.0
"""How long to wait for the hub's host to accept a connection before calling it unreachable."""


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _probe(endpoint: str, timeout: float) -> str | None:
    """None when ``endpoint``'s host accepts a TCP connection within ``timeout``, else the reason."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(endpoint)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=timeout):
            return None
    except OSError as exc:
        return exc.strerror or str(exc) or type(exc).__name__


def hub_access(repo_id: str, *, marker: str = "config.json", repo_type: str = "model", what: str = "model") -> bool:
    """Check, at once, that ``repo_id`` can be loaded; True when it must be loaded from the local cache only.

    A hub id is loaded from the local Hugging Face cache when the hub is off (``HF_HUB_OFFLINE``) or
    out of reach, from the hub otherwise. When it is neither cached nor reachable this raises one
    :class:`~deepsift.exceptions.ModelNotFoundError` naming the cause, instead of the libraries'
    retries and a misleading "does not appear to have a file named ..." half a minute later.
    ``marker`` is a file whose presence in the cache means the repository was downloaded.
    """
    from huggingface_hub import constants, try_to_load_from_cache

    from .exceptions import ModelNotFoundError

    cached = isinstance(try_to_load_from_cache(repo_id, marker, repo_type=repo_type), str)
    hint = (f"download it once on a machine with network (hf download {repo_id}"
            f"{' --repo-type dataset' if repo_type == 'dataset' else ''}) or give a local folder")
    if constants.HF_HUB_OFFLINE or _truthy(os.environ.get("HF_HUB_OFFLINE")):
        if cached:
            return True
        raise ModelNotFoundError(f"{what} {repo_id!r} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) "
                                 f"and the hub is switched off (HF_HUB_OFFLINE=1): {hint}")
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return False  # through a proxy: let the libraries connect
    reason = _probe(constants.ENDPOINT, HUB_PROBE_TIMEOUT_S)
    if reason is None:
        return False
    if cached:
        return True
    raise ModelNotFoundError(f"{what} {repo_id!r} is not in the local Hugging Face cache and the hub "
                             f"({constants.ENDPOINT}) cannot be reached ({reason}): {hint}")
