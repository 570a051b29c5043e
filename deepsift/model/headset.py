"""A set of classifier heads stored together: ``heads.json`` plus one folder per head.

Layout::

    HEADS_DIR/
      heads.json          {"format_version", "embedding_dim", "model", "preprocessing", "heads": {name: folder}}
      linear/head.json    + head.safetensors
      knn/ ...  svm/ ...
      linear-sd21/ ...    per-generator heads are named "<kind>:<generator>"

Heads for a model are looked up in this order: an explicit folder; ``<model dir>/heads``;
the deepsift cache ``$DEEPSIFT_HOME/heads/<owner>--<name>`` (default ``~/.cache/deepsift``)
where ``deepsift weights import-official`` writes the converted published classifiers.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from ..exceptions import DataError, ModelError, ModelNotFoundError
from ..filenames import safe_name
from .heads import Head, load_head

HEADSET_FILE = "heads.json"


def deepsift_home() -> Path:
    """The deepsift cache folder (``$DEEPSIFT_HOME`` or ``~/.cache/deepsift``)."""
    return Path(os.environ.get("DEEPSIFT_HOME") or Path.home() / ".cache" / "deepsift")


def cached_heads_dir(model_id: str) -> Path:
    """Where converted heads for hub model ``model_id`` live in the cache."""
    return deepsift_home() / "heads" / str(model_id).replace("/", "--")


def _folder_name(name: str) -> str:
    """A safe, distinct folder name for head ``name`` (``linear:sd21`` -> ``linear-sd21``)."""
    kind, _, generator = name.partition(":")
    return safe_name(kind) + (f"-{safe_name(generator)}" if generator else "")


def check_heads_folder(folder: str | Path) -> Path:
    """Check, before any work, that :func:`save_headset` can write ``folder`` (one DataError line if not)."""
    from ..outplaces import ensure_writable_dir, through_links

    out = through_links(folder)  # a link to a folder: the heads go into its target, the link stays
    if out.exists() and not out.is_dir():
        raise DataError(f"cannot write heads to {out}: it is a file")
    if out.is_dir() and any(out.iterdir()) and not (out / HEADSET_FILE).is_file():
        raise DataError(f"cannot write heads to {out}: the folder holds other files (not a heads folder); "
                        f"choose a new or empty folder")
    ensure_writable_dir(out.parent)
    return out


def save_headset(heads: dict[str, Head], folder: str | Path, *, model: str | None = None,
                 preprocessing: str = "official", embedding_dim: int | None = None,
                 backbone_sha256: str | None = None) -> Path:
    """Save several named heads into ``folder`` with a ``heads.json`` index, all or nothing.

    The heads are written into a hidden staging folder beside ``folder`` and swapped in whole,
    so a failure (a read-only place, a full disk) leaves the earlier heads as they were. An
    existing ``folder`` that is not a heads folder (and not empty) is refused, never replaced.
    """
    out = check_heads_folder(folder)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
        from ..outplaces import umask_mode

        os.chmod(stage, umask_mode(folder=True))  # the user's umask, not mkdtemp's 0700
    except OSError as exc:
        raise DataError(f"cannot write heads to {out}: {exc.strerror or exc}") from None
    old = out.with_name(stage.name[:-4] + ".old")
    try:
        index = {}
        for name, head in heads.items():
            sub = _folder_name(name)
            head.save(stage / sub)
            index[name] = sub
        meta = {"format_version": 1, "model": model, "backbone_sha256": backbone_sha256,
                "preprocessing": preprocessing, "embedding_dim": embedding_dim, "heads": index}
        (stage / HEADSET_FILE).write_text(json.dumps(meta, indent=2))
        if out.exists():
            os.replace(out, old)
        os.replace(stage, out)
    except OSError as exc:
        shutil.rmtree(stage, ignore_errors=True)
        if old.exists() and not out.exists():
            os.replace(old, out)
        raise DataError(f"cannot write heads to {out}: {exc.strerror or exc}; the folder is as it was") from None
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return out


def load_headset(folder: str | Path) -> tuple[dict[str, Head], dict]:
    """Load every head listed in ``folder/heads.json``; returns (heads by name, index metadata)."""
    folder = Path(folder)
    index_path = folder / HEADSET_FILE
    if not index_path.is_file():
        if (folder / "head.json").is_file():  # a single head folder
            head = load_head(folder)
            return {head.kind: head}, {"heads": {head.kind: "."}}
        raise ModelNotFoundError(f"{folder}: no {HEADSET_FILE} (not a deepsift heads folder)")
    try:
        meta = json.loads(index_path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(f"{index_path}: invalid JSON ({exc})") from None
    heads: dict[str, Head] = {}
    for name, sub in meta.get("heads", {}).items():
        path = (folder / sub).resolve()
        if folder.resolve() not in path.parents and path != folder.resolve():
            raise ModelError(f"{index_path}: head {name!r} points outside its folder ({sub!r})")
        heads[name] = load_head(path)
    if not heads:
        raise ModelError(f"{index_path}: lists no heads")
    return heads, meta


def check_heads_backbone(meta: dict, fingerprint: str | None, heads_dir: Path, force: bool = False) -> None:
    """Refuse heads fitted on another backbone (``heads.json``'s ``backbone_sha256``), unless ``force``.

    Heads written before the fingerprint existed (no ``backbone_sha256``) are accepted as before.
    """
    recorded = meta.get("backbone_sha256")
    if force or not recorded or not fingerprint or recorded == fingerprint:
        return
    raise ModelError(f"the heads in {heads_dir} were fitted on another backbone (weights {recorded[:12]}..., "
                     f"this model's {fingerprint[:12]}...): their verdicts would be wrong. Refit them "
                     f"(deepsift heads fit), use the heads of this model, or force their use (the force-heads "
                     f"option)")


def find_heads_dir(model: str | os.PathLike, model_dir: Path | None) -> Path | None:
    """Locate the heads for ``model`` (see the module docstring); None if there are none."""
    candidates = []
    if model_dir is not None:
        candidates.append(model_dir / "heads")
    if not Path(model).expanduser().is_dir():
        candidates.append(cached_heads_dir(str(model)))
    for c in candidates:
        if (c / HEADSET_FILE).is_file():
            return c
    return None
