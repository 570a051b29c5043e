"""What the Ray runs share (``data build --ray``, ``embed``/``detect --ray``): connecting, and errors."""
from __future__ import annotations

from .exceptions import DeepsiftError


def init_ray(address: str) -> bool:
    """Connect to the cluster at ``address`` (``auto``: the running one, else a local one); True when this call connected."""
    import ray

    if ray.is_initialized():
        return False
    if address == "auto":
        try:
            ray.init(address="auto", include_dashboard=False, log_to_driver=False)
        except ConnectionError:
            ray.init(include_dashboard=False, object_store_memory=256 << 20, log_to_driver=False)
    else:
        ray.init(address=address, log_to_driver=False)
    return True


def unwrap_error(exc: BaseException, fallback: type[DeepsiftError]) -> DeepsiftError:
    """The deepsift error inside a Ray task error, or a ``fallback`` error naming its last line."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, DeepsiftError):
        return type(cause)(str(cause))
    return fallback(f"Ray task failed: {(str(cause or exc).strip().splitlines() or ['?'])[-1]}")
