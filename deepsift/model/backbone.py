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

from ..exceptions import ModelError, ModelNotFoundError, UsageError

DEFAULT_MODEL = "aimagelab/CoDE"
"""Hub id of the published CoDE weights (MIT licence)."""

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

    try:
        return Path(snapshot_download(repo_id=text, revision=revision, allow_patterns=list(MODEL_FILES)))
    except Exception as exc:  # huggingface_hub raises many types for offline/missing
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelNotFoundError(
            f"cannot load model {text!r}: it is not in the local Hugging Face cache and the hub could "
            f"not be reached ({type(exc).__name__}: {reason[:200]}). Download it once on a machine "
            f"with network (`hf download {text}`), or point at a local directory "
            f"holding config.json and model.safetensors: --model /path/to/dir"
        ) from None


def load_backbone(model: str | os.PathLike = DEFAULT_MODEL, device: str | torch.device = "cpu") -> ViTModel:
    """Load the embedding network from a hub id or a local directory, in eval mode."""
    folder = resolve_model_dir(model)
    if not (folder / "model.safetensors").is_file():
        raise ModelNotFoundError(f"{folder}: no model.safetensors (deepsift loads safetensors weights only)")
    from transformers.utils import logging as hf_logging

    quiet = not hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a per-tensor bar is noise for a 22 MB model
    try:
        net = ViTModel.from_pretrained(folder, add_pooling_layer=False, use_safetensors=True)
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise ModelError(f"{folder}: cannot load the ViT weights ({exc})") from None
    finally:
        if not quiet:
            hf_logging.enable_progress_bar()
    try:
        return net.to(device).eval()
    except (RuntimeError, AssertionError, ValueError) as exc:
        raise UsageError(f"device {str(device)!r} is not usable here ({exc})") from None


def save_backbone(net: ViTModel, out_dir: str | os.PathLike) -> Path:
    """Save the network in the published layout (config.json + model.safetensors + preprocessor)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    net.save_pretrained(out, safe_serialization=True)
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
