"""Where an image looks fake: the P(fake) of local 224-px crops, on a grid over the image.

CoDE learns local-global consistency, so a 224 x 224 crop at native resolution (the scale the
detector reads in ``official`` preprocessing) carries signal on its own. The image is covered by
an ``rows x cols`` grid of crops (at most ``max_grid`` per side, evenly spaced, overlapping when
the side is not a multiple of 224); cell ``(r, c)`` of the heatmap is the P(fake) of crop ``(r, c)``.
An image smaller than 224 px gets one crop (zero-padded like the full-image path).

The demo cuts the crops from the image reduced to at most ``heatmap_megapixels``
(:mod:`deepsift.demo.reduced`): on a larger image a crop covers ``224 x scale`` pixels of the
original; the boxes are given in the original image's pixels either way.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image

from ..images import CROP_SIZE, center_crop_array


def grid_positions(length: int, max_cells: int, size: int = CROP_SIZE) -> list[int]:
    """Start offsets of evenly spaced ``size`` windows covering ``length`` (one centred window if short)."""
    n = max(1, min(max_cells, math.ceil(length / size)))
    if length <= size or n == 1:
        return [max(0, (length - size) // 2)]
    return [round(i * (length - size) / (n - 1)) for i in range(n)]


Grid = tuple[np.ndarray, int, int, list[list[int]], float]


def crops(image: Image.Image, max_grid: int, size: tuple[int, int] | None = None) -> Grid:
    """The crop batch (N x 224 x 224 x 3 uint8), rows, cols, each crop's box [x, y, w, h] and the scale.

    ``image`` may be a reduced copy of an image of ``size``: the boxes are then given in that
    size's pixels and the scale is its width over the reduced width. Each window is copied out of
    the image on its own (no array of the whole image is made).
    """
    w, h = image.size
    fx, fy = (size[0] / w, size[1] / h) if size else (1.0, 1.0)
    ys, xs = grid_positions(h, max_grid), grid_positions(w, max_grid)
    batch, boxes = [], []
    for y in ys:
        for x in xs:
            window = np.asarray(image.crop((x, y, min(x + CROP_SIZE, w), min(y + CROP_SIZE, h))))
            batch.append(center_crop_array(window) if window.shape[:2] != (CROP_SIZE, CROP_SIZE) else window)
            boxes.append([round(x * fx), round(y * fy), round(min(CROP_SIZE, w - x) * fx),
                          round(min(CROP_SIZE, h - y) * fy)])
    return np.ascontiguousarray(np.stack(batch)), len(ys), len(xs), boxes, round(fx, 6)


def heatmap_payload(probabilities: np.ndarray, rows: int, cols: int, boxes: list[list[int]],
                    size: tuple[int, int], scale: float = 1.0) -> dict:
    """The JSON heatmap: grid shape, per-cell P(fake) (row-major), crop boxes, image size, reduction."""
    values = [[round(float(p), 6) for p in probabilities[r * cols:(r + 1) * cols]] for r in range(rows)]
    return {"rows": rows, "cols": cols, "values": values, "boxes": boxes, "crop": CROP_SIZE,
            "width": size[0], "height": size[1], "scale": scale}
