"""What the Ray runs share (``data build --ray``, ``embed``/``detect --ray``): connecting, and errors."""
from __future__ import annotations

from .exceptions import DeepsiftError


def init_ray(address: str) -> bool:
    """Connect to the cluster at ``address`` (``auto``: the running one, else a local one); True when this call connected."""
    import logging
    import os

    from .output import console_level

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report to Ray's servers
    import ray

    if ray.is_initialized():
        return False
    quiet = {"logging_level": logging.INFO if console_level() > 0 else logging.ERROR, "log_to_driver": False}
    if address == "auto":
        try:
            ray.init(address="auto", include_dashboard=False, **quiet)
        except ConnectionError:
            # a local instance of our own: no token file in ~/.ray (the same setting scripts/test.sh uses)
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            ray.init(include_dashboard=False, object_store_memory=256 << 20, _node_ip_address="127.0.0.1", **quiet)
    else:
        ray.init(address=address, **quiet)
    return True


def unwrap_error(exc: BaseException, fallback: type[DeepsiftError]) -> DeepsiftError:
    """The deepsift error inside a Ray task error, or a ``fallback`` error naming its last line."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, DeepsiftError):
        return type(cause)(str(cause))
    return fallback(f"Ray task failed: {(str(cause or exc).strip().splitlines() or ['?'])[-1]}")
