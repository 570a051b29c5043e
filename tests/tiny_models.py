"""Tiny, random-weight ``diffusers`` models saved in the hub layout, for offline tests.

Everything is built from configs (no download): a byte-level BPE CLIP tokenizer whose files
the test writes, a 2-layer CLIP text encoder, a 2-level UNet, an ``AutoencoderKL`` and a DDIM
scheduler, assembled into a ``StableDiffusionPipeline`` and saved with ``save_pretrained`` so
``from_pretrained(path)`` loads it exactly as it would load a hub model. Seeds are fixed, so
the saved weights (and thus the generated images) are the same in every process.

Reuse from other tests::

    from tiny_models import build_tiny_models
    paths = build_tiny_models(tmp_path_factory.mktemp("models"))
    paths.sd, paths.vae, paths.tokenizer
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

MAX_TOKENS = 77
"""``model_max_length`` of the tiny tokenizer (as CLIP's)."""


@dataclass(frozen=True)
class TinyModels:
    """Paths of the saved tiny models."""

    root: Path
    sd: Path  # StableDiffusionPipeline directory (model_index.json + components)
    vae: Path  # AutoencoderKL directory (config.json + safetensors)
    tokenizer: Path  # CLIPTokenizer directory (vocab.json + merges.txt)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode map (transformers 5 no longer exports it)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def write_tiny_tokenizer(directory: Path) -> Path:
    """Write a tiny byte-level BPE CLIP tokenizer (vocab.json, merges.txt) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    vocab_list = chars + [c + "</w>" for c in chars]
    merges = [("t", "h"), ("th", "e</w>"), ("a", "n"), ("i", "n"), ("o", "n</w>")]
    vocab_list += ["".join(m) for m in merges]
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(vocab_list))}
    (directory / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (directory / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n", encoding="utf-8"
    )
    return directory


def build_tiny_models(root: Path) -> TinyModels:
    """Build and save the tiny tokenizer, VAE and SD pipeline under ``root`` (deterministic weights)."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    root = Path(root)
    tok_dir = write_tiny_tokenizer(root / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir), model_max_length=MAX_TOKENS)

    torch.manual_seed(0)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=MAX_TOKENS,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    torch.manual_seed(1)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=32,
        attention_head_dim=8,
    )
    torch.manual_seed(2)
    vae = AutoencoderKL(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        norm_num_groups=32,
        sample_size=64,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    sd_dir = root / "tiny-sd"
    pipe.save_pretrained(str(sd_dir))
    vae_dir = root / "tiny-vae"
    vae.save_pretrained(str(vae_dir))
    return TinyModels(root=root, sd=sd_dir, vae=vae_dir, tokenizer=tok_dir)


def shared_tiny_models(tmp_path_factory) -> TinyModels:
    """The session's tiny models, built once under pytest's base temp dir and reused by every module.

    Use from a fixture: ``return shared_tiny_models(tmp_path_factory)``. Loading code should
    set ``HF_HUB_OFFLINE=1`` (the tests' models are loaded by path, never downloaded).
    """
    import os

    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "deepsift-tiny-models"
    with FileLock(str(root) + ".lock"):
        done = root / "DONE"
        if not done.is_file():
            build_tiny_models(root)
            done.write_text("ok\n")
    return TinyModels(root=root, sd=root / "tiny-sd", vae=root / "tiny-vae", tokenizer=root / "tokenizer")
