"""uint8 pixels: grayscale and RGB into each other, and how light an image's background is. No files, no Keras."""

import numpy as np

LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601, what PIL and TensorFlow use for RGB -> L


def to_color_mode(x, color_mode):
    """Grayscale (N,H,W,1) <-> rgb (N,H,W,3): channel repeated one way, BT.601 luma the other."""
    channels = x.shape[-1]
    if color_mode == "rgb" and channels == 1:
        return np.repeat(x, 3, axis=-1)
    if color_mode == "grayscale" and channels == 3:
        luma = x.astype(np.float32) @ np.asarray(LUMA_WEIGHTS, dtype=np.float32)
        return np.clip(np.round(luma), 0, 255).astype(np.uint8)[..., np.newaxis]
    return x


def background_brightness(images):
    """Median brightness (0..255) of each uint8 image's border ring: (N, H, W, C) → (N,)."""
    gray = to_color_mode(images, "grayscale")[..., 0]
    height, width = gray.shape[1:3]
    edge = max(1, min(height, width) // 8)
    ring = np.ones((height, width), dtype=bool)
    ring[edge:height - edge, edge:width - edge] = False
    return np.median(gray[:, ring], axis=1)
