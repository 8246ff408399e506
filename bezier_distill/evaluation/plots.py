"""Figures: samples against the target (scatter plots for 2-D data, image grids for the digits), teacher and
student paths with the Bezier control polygons, training-loss curves."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402


def plot_samples(samples: Tensor, target: Tensor, path: str | Path, title: str,
                 image_shape: tuple[int, ...] | None = None) -> None:
    """Writes a PNG: samples beside target samples ([n, 2] scatter, or the first 64 images [n, *image_shape])."""
    fig, axes = plt.subplots(1, 2, figsize=(8, 4), dpi=100)
    for ax, points, name in ((axes[0], target, "target"), (axes[1], samples, title)):
        if image_shape is None:
            ax.scatter(points[:, 0], points[:, 1], s=2, alpha=0.5)
            ax.set_aspect("equal")
        else:
            ax.imshow(_image_grid(points, image_shape, 8).clamp(-1, 1).numpy(), cmap="gray_r", vmin=-1, vmax=1)
            ax.axis("off")
        ax.set_title(name)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _image_grid(points: Tensor, image_shape: tuple[int, ...], side: int) -> Tensor:
    """The first side^2 images of points [n, *image_shape] (image_shape (H, W) or (C, H, W); channels are
    averaged to grey) tiled into one [side*h, side*w] array (-1 fills the rest)."""
    h, w = image_shape[-2:]
    points = points.reshape(points.shape[0], -1, h * w).float().mean(1)
    count = side * side
    blank = points.new_full((max(0, count - points.shape[0]), h * w), -1.0)
    tiles = torch.cat([points[:count], blank]).reshape(side, side, h, w)
    return tiles.permute(0, 2, 1, 3).reshape(side * h, side * w)


def plot_sample_grid(rows: list[tuple[str, list[Tensor | None]]], columns: list[str], target: Tensor,
                     path: str | Path, image_shape: tuple[int, int] | None = None, max_points: int = 1000) -> None:
    """A grid of panels, one row per model and one column per sampler setting: 2-D samples (over the target
    in grey) or 6x6 image grids. rows: (model name, one [n, D] tensor or None per column)."""
    size = 2.2
    fig, axes = plt.subplots(len(rows), len(columns), figsize=(size * len(columns) + 1.2, size * len(rows)), dpi=60,
                             squeeze=False)
    bounds = None
    if image_shape is None:
        low, high = target.float().quantile(0.002, dim=0), target.float().quantile(0.998, dim=0)
        margin = 0.15 * (high - low)
        bounds = ((low - margin).tolist(), (high + margin).tolist())
    for r, (name, panels) in enumerate(rows):
        for c, points in enumerate(panels):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(columns[c], fontsize=9)
            if c == 0:
                ax.set_ylabel(name, fontsize=9)
            if points is None:
                ax.set_frame_on(False)
                continue
            if image_shape is None:
                ax.scatter(target[:max_points, 0], target[:max_points, 1], s=1, c="0.8")
                ax.scatter(points[:max_points, 0], points[:max_points, 1], s=1, c="C0")
                ax.set_xlim(bounds[0][0], bounds[1][0])
                ax.set_ylim(bounds[0][1], bounds[1][1])
            else:
                ax.imshow(_image_grid(points, image_shape, 6).clamp(-1, 1).numpy(), cmap="gray_r", vmin=-1, vmax=1)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_trajectories(panels: list[dict], target: Tensor, path: str | Path, columns: int = 4) -> None:
    """Teacher ODE paths against the Bezier paths the student trained on and the student's own 2-step path (2-D).

    Each panel: title; teacher [B, K, 2] (the ODE states); polygon [B, n+1, 2] (control points x0, guides, x1);
    curve [B, T, 2] (the Bezier path through them); student [B, S, 2] (the student sampler's states).
    """
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.4 * columns, 3.4 * rows), dpi=70, squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, panel in zip(axes.flat, panels):
        ax.scatter(target[:1000, 0], target[:1000, 1], s=1, c="0.85")
        for b in range(panel["teacher"].shape[0]):
            label = b == 0
            ax.plot(*panel["teacher"][b].T, c="0.3", lw=1, label="teacher ODE" if label else None)
            ax.plot(*panel["polygon"][b].T, c="C1", ls="--", lw=0.8, marker="o", ms=2.5,
                    label="control polygon" if label else None)
            ax.plot(*panel["curve"][b].T, c="C0", lw=1.2, label="Bezier path (training)" if label else None)
            ax.plot(*panel["student"][b].T, c="C3", lw=1, marker=".", ms=5, label="student, 2 steps" if label else None)
        ax.set_title(panel["title"], fontsize=9)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    axes.flat[0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_losses(groups: dict[str, dict[str, list[tuple[int, float]]]], path: str | Path) -> None:
    """Training loss against step (log scale), one panel per group of runs (name -> [(step, loss)])."""
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.4), dpi=70, squeeze=False)
    for ax, (title, runs) in zip(axes[0], groups.items()):
        for name, curve in runs.items():
            if curve:
                steps, losses = zip(*curve)
                ax.plot(steps, losses, lw=1, label=name)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=6)
    axes[0, 0].set_ylabel("training loss")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
