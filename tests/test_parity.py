"""Exact parity with the published CoDE inference path (transformers forward, official preprocessing)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import ViTModel

from deepsift.model.backbone import load_backbone
from deepsift.model.detector import Detector

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def official_preprocess(path) -> torch.Tensor:
    """Independent re-implementation of torchvision CenterCrop(224) + ToTensor + Normalize on PIL."""
    im = Image.open(path).convert("RGB")
    w, h = im.size
    if w < 224 or h < 224:  # torchvision pads left/top floor((224-s)/2), right/bottom the rest, fill 0
        pw, ph = max(224 - w, 0), max(224 - h, 0)
        canvas = Image.new("RGB", (w + pw, h + ph), (0, 0, 0))
        canvas.paste(im, (pw // 2, ph // 2))
        im = canvas
        w, h = im.size
    top, left = int(round((h - 224) / 2.0)), int(round((w - 224) / 2.0))
    im = im.crop((left, top, left + 224, top + 224))
    x = torch.from_numpy(np.array(im)).permute(2, 0, 1).float().div(255)
    return ((x - torch.from_numpy(MEAN)[:, None, None]) / torch.from_numpy(STD)[:, None, None]).unsqueeze(0)


@pytest.fixture(scope="module")
def parity_images(tmp_path_factory):
    rng = np.random.default_rng(7)
    d = tmp_path_factory.mktemp("parity")
    sizes = [(512, 512), (225, 301), (300, 227), (224, 224), (100, 300), (223, 150), (640, 360), (257, 256)]
    paths = []
    for i, (w, h) in enumerate(sizes):
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        p = d / f"img{i}.{['png', 'jpg', 'webp'][i % 3]}"
        Image.fromarray(arr).save(p, quality=90)
        paths.append(p)
    return paths


def test_embeddings_equal_transformers_forward(code_model_dir, parity_images):
    ref_model = ViTModel.from_pretrained(code_model_dir, add_pooling_layer=False).eval()
    with torch.no_grad():
        expected = torch.cat([ref_model(pixel_values=official_preprocess(p)).last_hidden_state[:, 0]
                              for p in parity_images]).numpy()
    det = Detector.load_backbone_only(str(code_model_dir), batch_size=3)
    got = det.embed([str(p) for p in parity_images])
    assert got.shape == (len(parity_images), 192)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    # and the embeddings differ per image: the comparison is not vacuous
    assert np.abs(got[0] - got[1]).max() > 1e-3


def test_published_config_is_read_not_assumed(code_model_dir):
    net = load_backbone(str(code_model_dir))
    assert net.config.layer_norm_eps == 1e-6
    assert net.config.hidden_size == 192 and net.config.num_hidden_layers == 12
    assert net.config.num_attention_heads == 3 and net.pooler is None
    n_params = sum(p.numel() for p in net.parameters())
    assert 5.4e6 < n_params < 5.8e6


def test_resize_mode_differs_and_matches_reference(code_model_dir, parity_images):
    det = Detector.load_backbone_only(str(code_model_dir), preprocessing="resize")
    img = Image.open(parity_images[0]).convert("RGB")
    resized = img.resize((248, 248), Image.BILINEAR)
    off = (248 - 224) // 2
    arr = np.asarray(resized)[off:off + 224, off:off + 224]
    x = torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div(255)
    x = ((x - torch.from_numpy(MEAN)[:, None, None]) / torch.from_numpy(STD)[:, None, None]).unsqueeze(0)
    with torch.no_grad():
        expected = det.backbone(pixel_values=x).last_hidden_state[:, 0].numpy()
    got = det.embed([str(parity_images[0])])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    official = Detector.load_backbone_only(str(code_model_dir)).embed([str(parity_images[0])])
    assert np.abs(official - got).max() > 1e-3
