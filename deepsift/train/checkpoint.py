"""Training checkpoints: safetensors + JSON, written whole or not at all.

``OUT/checkpoint/`` holds ``model.safetensors`` (the network), ``optimizer.safetensors`` (the
optimiser's tensors and the RNG states) and ``state.json`` (step, epoch, scheduler, optimiser
hyper-parameters, best head accuracy, patience counter, the settings). A new checkpoint is
written into a hidden temporary folder, flushed, and swapped in by renames; the one before it
stays as ``checkpoint.prev/``. A failure (a full disk) removes the temporary folder and leaves
both in place. A kill at any point leaves a folder that resumes: between the two renames only
``checkpoint.prev/`` is complete, and loading falls back to it (a stale temporary folder is
removed by the next write). Loading checks every file first (a corrupt or truncated one is one
:class:`~deepsift.exceptions.DataError` line) and changes nothing on disk. Nothing is pickled.

``OUT/best.safetensors`` holds the network of the epoch with the best held-out head accuracy so
far (its step and accuracy in the file's metadata), replaced atomically at each new best; the
model folder takes these weights at the end unless the run keeps the last step's (``keep``).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..exceptions import DataError
from ..outplaces import umask_mode

NAME = "checkpoint"
BEST = "best.safetensors"
STATE_VERSION = 1


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def flatten_optimizer(opt_state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, JSON part) of an optimiser ``state_dict``."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for pid, st in opt_state["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"opt.{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[k] = v
    return tensors, {"param_groups": opt_state["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    """The optimiser ``state_dict`` from :func:`flatten_optimizer`'s parts."""
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        if key.startswith("opt."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    for pid, sc in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(sc)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(out: Path, model_state: dict[str, torch.Tensor], opt_state: dict, state: dict[str, Any]) -> Path:
    """Write ``out/checkpoint`` atomically (the previous one becomes ``checkpoint.prev``); DataError on failure."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    final, prev = out / NAME, out / f"{NAME}.prev"
    tmp: Path | None = None
    for stale in out.glob(f".{NAME}.*.tmp"):  # left by a killed write
        shutil.rmtree(stale, ignore_errors=True)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{NAME}.", suffix=".tmp", dir=out))
        os.chmod(tmp, umask_mode(folder=True))  # the user's umask, not mkdtemp's 0700 (it becomes the checkpoint)
        save_file({k: v.detach().cpu().contiguous() for k, v in model_state.items()}, str(tmp / "model.safetensors"))
        tensors, meta = flatten_optimizer(opt_state)
        tensors["rng.torch"] = torch.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            tensors["rng.cuda"] = torch.cuda.get_rng_state()
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        doc = {"version": STATE_VERSION, "optimizer": meta, **state}
        (tmp / "state.json").write_text(json.dumps(doc, indent=1))
        for f in tmp.iterdir():
            with open(f, "rb+") as fh:
                os.fchmod(fh.fileno(), umask_mode())  # safetensors writes 0600: the user's umask instead
                os.fsync(fh.fileno())
        _fsync_dir(tmp)
        if final.exists():
            if prev.exists():
                shutil.rmtree(prev)
            os.replace(final, prev)
        os.replace(tmp, final)
        _fsync_dir(out)
    except (OSError, SafetensorError) as exc:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if not final.exists() and prev.exists():
            os.replace(prev, final)
        reason = getattr(exc, "strerror", None) or str(exc).strip().splitlines()[0]
        raise DataError(f"cannot write the checkpoint in {out}: {reason}; "
                        f"the previous checkpoint is kept as it was") from None
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def save_best(out: Path, model_state: dict[str, torch.Tensor], step: int, accuracy: float) -> Path:
    """Write ``out/best.safetensors`` (the weights of a new best epoch) atomically; DataError on failure."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    final = out / BEST
    fd, name = tempfile.mkstemp(prefix=".best.", suffix=".tmp", dir=out)
    os.close(fd)
    tmp = Path(name)
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in model_state.items()}, str(tmp),
                  metadata={"step": str(step), "head_accuracy": repr(float(accuracy))})
        with open(tmp, "rb+") as fh:
            os.fchmod(fh.fileno(), umask_mode())  # the user's umask, not mkstemp's (or safetensors') 0600
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        _fsync_dir(out)
    except (OSError, SafetensorError) as exc:
        tmp.unlink(missing_ok=True)
        reason = getattr(exc, "strerror", None) or str(exc).strip().splitlines()[0]
        raise DataError(f"cannot write the best epoch's weights in {out}: {reason}; "
                        f"the previous best is kept as it was") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final


def load_best(out: str | os.PathLike) -> tuple[dict[str, torch.Tensor], int, float] | None:
    """(weights, step, head accuracy) of ``out/best.safetensors``; None when there is none; DataError if corrupt."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = Path(out) / BEST
    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        return load_file(str(path)), int(meta["step"]), float(meta["head_accuracy"])
    except (SafetensorError, OSError, ValueError, KeyError, RuntimeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: corrupt or truncated ({reason[:200]}); remove it, or keep the last "
                        f"step's weights (keep: last)") from None


def find_checkpoint(path: str | os.PathLike) -> Path:
    """The checkpoint folder of ``path``: a training output folder (its ``checkpoint/``, or ``checkpoint.prev/``
    when a write was killed between its renames) or the checkpoint folder itself."""
    p = Path(path)
    if (p / NAME / "state.json").exists():
        return p / NAME
    if not (p / NAME).exists() and (p / f"{NAME}.prev" / "state.json").exists():
        return p / f"{NAME}.prev"
    if (p / NAME).is_dir():
        return p / NAME
    if (p / "state.json").exists():
        return p
    raise DataError(f"{p}: no checkpoint to resume from (no {NAME}/state.json)")


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict, dict[str, torch.Tensor], dict]:
    """(model tensors, optimiser state_dict, RNG tensors, state) of a checkpoint; DataError if any file is bad."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    ck = find_checkpoint(path)
    hint = f"; nothing was changed (the previous checkpoint, if any, is in {ck.parent / (NAME + '.prev')})"
    try:
        state = json.loads((ck / "state.json").read_text())
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION or "step" not in state:
            raise ValueError("not a deepsift training state")
    except (OSError, ValueError) as exc:
        raise DataError(f"{ck / 'state.json'}: corrupt or truncated checkpoint ({exc}){hint}") from None
    tensors = {}
    for name in ("model.safetensors", "optimizer.safetensors"):
        try:
            tensors[name] = load_file(str(ck / name))
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(f"{ck / name}: corrupt or truncated checkpoint ({reason[:200]}){hint}") from None
    opt_t = tensors["optimizer.safetensors"]
    rng = {k: v for k, v in opt_t.items() if k.startswith("rng.")}
    try:
        opt = unflatten_optimizer(opt_t, state["optimizer"])
    except (KeyError, ValueError) as exc:
        raise DataError(f"{ck}: corrupt checkpoint (optimiser state: {exc}){hint}") from None
    return tensors["model.safetensors"], opt, rng, state


def load_state(path: str | os.PathLike) -> dict:
    """The ``state.json`` of a checkpoint (settings, step); DataError if it is missing or corrupt."""
    ck = find_checkpoint(path)
    try:
        state = json.loads((ck / "state.json").read_text())
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION or "step" not in state:
            raise ValueError("not a deepsift training state")
    except (OSError, ValueError) as exc:
        raise DataError(f"{ck / 'state.json'}: corrupt or truncated checkpoint ({exc}); nothing was changed "
                        f"(the previous checkpoint, if any, is in {ck.parent / (NAME + '.prev')})") from None
    return state
