"""Figures of samples against the target: scatter plots for 2-D data, image grids for the digits."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402


def plot_samples(samples: Tensor, target: Tensor, path: str | Path, title: str,
                 image_shape: tuple[int, int] | None = None) -> None:
    """Writes a PNG: samples beside target samples ([n, 2] scatter, or the first 64 as 8x8 images)."""
    fig, axes = plt.subplots(1, 2, figsize=(8, 4), dpi=100)
    for ax, points, name in ((axes[0], target, "target"), (axes[1], samples, title)):
        if image_shape is None:
            ax.scatter(points[:, 0], points[:, 1], s=2, alpha=0.5)
            ax.set_aspect("equal")
        else:
            h, w = image_shape
            blank = points.new_full((max(0, 64 - points.shape[0]), h * w), -1.0)  # -1 is a white pixel
            grid = torch.cat([points[:64], blank]).reshape(8, 8, h, w).permute(0, 2, 1, 3).reshape(8 * h, 8 * w)
            ax.imshow(grid.clamp(-1, 1).numpy(), cmap="gray_r", vmin=-1, vmax=1)
            ax.axis("off")
        ax.set_title(name)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
