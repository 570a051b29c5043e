"""The CoDE embedding network: a ``transformers`` ViT-Tiny, loaded from the hub or a local folder.

The published checkpoint ``aimagelab/CoDE`` is a plain ``ViTModel`` (config.json +
model.safetensors); the embedding is the 192-d CLS token after the final LayerNorm
(``last_hidden_state[:, 0]``), with no pooler and no L2 normalisation.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from transformers import ViTConfig, ViTModel

from ..choices import DEFAULT_MODEL
from ..exceptions import ModelError, ModelNotFoundError, UsageError
from ..hub import hub_access, quiet_loading

MODEL_FILES = ("config.json", "model.safetensors", "preprocessor_config.json")


def build_code_config(**overrides: object) -> ViTConfig:
    """Return the ViT-Tiny/16 config of CoDE (timm's LayerNorm eps 1e-6); ``overrides`` win."""
    cfg = dict(
        hidden_size=192,
        num_hidden_layers=12,
        num_attention_heads=3,
        intermediate_size=768,
        image_size=224,
        patch_size=16,
        num_channels=3,
        qkv_bias=True,
        layer_norm_eps=1e-6,
        hidden_act="gelu",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    cfg.update(overrides)
    return ViTConfig(**cfg)


def create_backbone(config: ViTConfig | None = None, seed: int | None = None) -> ViTModel:
    """Build a randomly initialised CoDE network (no pooler) for training or tests."""
    if seed is not None:
        torch.manual_seed(seed)
    return ViTModel(config or build_code_config(), add_pooling_layer=False)


def resolve_model_dir(model: str | os.PathLike, revision: str | None = None) -> Path:
    """Return a local folder holding the model: ``model`` itself, or a cached hub download."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{path}: not a model directory (no config.json)")
        return path
    text = str(model)
    if path.exists() or text.startswith((".", "/", "~")) or text.count("/") != 1:
        raise ModelNotFoundError(
            f"model {text!r} is neither a local model directory nor a hub id of the form 'owner/name'"
        )
    from huggingface_hub import snapshot_download

    local_only = hub_access(text, marker="config.json", what="model")  # fails at once, naming the cause
    try:
        with quiet_loading():
            return Path(snapshot_download(repo_id=text, revision=revision, allow_patterns=list(MODEL_FILES),
                                          local_files_only=local_only))
    except Exception as exc:  # huggingface_hub raises many types for offline/missing
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelNotFoundError(
            f"cannot load model {text!r} ({type(exc).__name__}: {reason[:200]}): download it once on a machine "
            f"with network (hf download {text}), or give a local folder holding config.json and model.safetensors"
        ) from None


def check_weights_file(path: Path) -> list[str]:
    """The tensor names of a safetensors file; a file that is not one is a :class:`ModelError` naming it.

    The header and its coverage of the file are checked (a truncated, padded or garbage file
    fails here), before any tensor is read.
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            return list(fh.keys())
    except (SafetensorError, OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path}: not a valid safetensors file ({reason[:200]})") from None


def load_backbone(model: str | os.PathLike = DEFAULT_MODEL, device: str | torch.device = "cpu") -> ViTModel:
    """Load the embedding network from a hub id or a local directory, in eval mode.

    A weights file that is corrupt, truncated, lacks some of the network's tensors or holds
    tensors of the wrong shape is refused with one :class:`ModelError` naming it (transformers
    would otherwise fill missing tensors with random values).
    """
    folder = resolve_model_dir(model)
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise ModelNotFoundError(f"{folder}: no model.safetensors (deepsift loads safetensors weights only)")
    check_weights_file(weights)
    from safetensors import SafetensorError
    from transformers.utils import logging as hf_logging

    quiet = not hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()  # a per-tensor bar is noise for a 22 MB model
    hf_logging.set_verbosity_error()  # its load report too: problems are refused below, in one line
    try:
        with quiet_loading("transformers"):
            net, info = ViTModel.from_pretrained(folder, add_pooling_layer=False, use_safetensors=True,
                                                 output_loading_info=True)
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError, json.JSONDecodeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "mismatched_sizes" in reason:
            reason = "tensors of the wrong shape for this network's config.json"
        raise ModelError(f"{weights}: cannot load the ViT weights ({reason[:300]})") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        if not quiet:
            hf_logging.enable_progress_bar()
    missing = sorted(info.get("missing_keys") or [])
    if missing or info.get("mismatched_keys"):
        what = f"{len(missing)} tensor(s) missing, e.g. {', '.join(missing[:3])}" if missing else \
            f"tensors of the wrong shape: {', '.join(str(m[0] if isinstance(m, tuple) else m) for m in list(info['mismatched_keys'])[:3])}"
        raise ModelError(f"{weights}: does not hold this network's weights ({what})")
    try:
        return net.to(device).eval()
    except (RuntimeError, AssertionError, ValueError) as exc:
        raise UsageError(f"device {str(device)!r} is not usable here ({exc})") from None


def weights_fingerprint(net: torch.nn.Module) -> str:
    """A content hash (SHA-256) of a network's weights: names, shapes and float32 values, wherever they live.

    Heads record it (``heads.json``) so that heads fitted on one backbone are not used on another.
    """
    import hashlib

    h = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        t = tensor.detach().to("cpu", torch.float32).contiguous()
        h.update(f"{name}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def save_backbone(net: ViTModel, out_dir: str | os.PathLike) -> Path:
    """Save the network in the published layout (config.json + model.safetensors + preprocessor)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    net.save_pretrained(out, safe_serialization=True)
    from ..outplaces import umask_mode

    for f in out.glob("*.safetensors"):
        os.chmod(f, umask_mode())  # safetensors writes 0600: the user's umask instead
    write_preprocessor_config(out)
    return out


def write_preprocessor_config(out_dir: Path) -> None:
    """Write the official preprocessing (centre crop 224, no resize, ImageNet mean/std) as JSON."""
    from ..images import CROP_SIZE, IMAGENET_MEAN, IMAGENET_STD

    cfg = {
        "image_processor_type": "ViTImageProcessor",
        "do_resize": False,
        "do_center_crop": True,
        "crop_size": {"height": CROP_SIZE, "width": CROP_SIZE},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(IMAGENET_MEAN),
        "image_std": list(IMAGENET_STD),
    }
    (out_dir / "preprocessor_config.json").write_text(json.dumps(cfg, indent=2))


@torch.inference_mode()
def embed_tensor(net: ViTModel, pixels: torch.Tensor) -> torch.Tensor:
    """Forward a normalised NCHW batch and return the CLS embeddings as float32 on the CPU (N, hidden)."""
    param = next(net.parameters())
    out = net(pixel_values=pixels.to(device=param.device, dtype=param.dtype, non_blocking=True))
    return out.last_hidden_state[:, 0].float().cpu()
