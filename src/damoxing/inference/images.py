"""Images from generative runs (vae, gan): sample grids while training, and `damoxing generate RUN`.

Samples come out of the model in its own units (standardized pixels); they are mapped back to
the data's units with the run's fitted ImagePreprocessor (`inverse_transform`), then to [0, 1]
for display by dividing by the scale it learned (255 for uint8 images, 16 for the digits). PNGs
are written with Pillow, one image per grid cell, enlarged by whole pixels so small images
(8x8 digits) stay visible.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np

from damoxing.core.errors import UserError
from damoxing.models.protocols import Interpolates

GRID_SAMPLES = 64  # cells in a training sample grid (8 x 8)
MIN_CELL_PIXELS = 32  # enlarge small images to at least this many pixels per side
OUTPUT_SUFFIXES = (".png", ".npz")


def to_display(images: np.ndarray, preprocessing) -> np.ndarray:
    """Model-space images (N, C, H, W) -> the data's units -> [0, 1] for display."""
    original = preprocessing.inputs.inverse_transform(images)
    return np.clip(original / preprocessing.inputs.scale_, 0.0, 1.0)


def grid_image(images01: np.ndarray, columns: Optional[int] = None, pad: int = 1) -> np.ndarray:
    """(N, C, H, W) in [0, 1] -> one uint8 picture (rows x cols cells, `pad` pixels of white between).

    C = 1 gives a grey (H', W') picture, C = 3 a colour (H', W', 3) one; any other channel count
    is shown as the mean over channels.
    """
    n, c, h, w = images01.shape
    if c not in (1, 3):
        images01, c = images01.mean(axis=1, keepdims=True), 1
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    zoom = max(1, math.ceil(MIN_CELL_PIXELS / max(h, w)))
    cells = images01.repeat(zoom, axis=2).repeat(zoom, axis=3)  # nearest-neighbour enlargement
    h, w = h * zoom, w * zoom
    canvas = np.ones((c, rows * (h + pad) + pad, columns * (w + pad) + pad), dtype=np.float32)
    for i in range(n):
        r, col = divmod(i, columns)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        canvas[:, top : top + h, left : left + w] = cells[i]
    picture = (canvas * 255).round().astype(np.uint8)
    return picture[0] if c == 1 else picture.transpose(1, 2, 0)


def save_png(picture: np.ndarray, path: Path) -> Path:
    from PIL import Image

    Image.fromarray(picture).save(path, format="PNG")
    return path


class SampleGrids:
    """Fixed-seed sample grids of one training run: kept in memory per epoch, written with the run.

    The same noise (`seed`) every time, so the grids show one set of samples changing over training.
    """

    def __init__(self, preprocessing, every: int, seed: int, n: int = GRID_SAMPLES):
        self.preprocessing, self.every, self.seed, self.n = preprocessing, every, seed, n
        self.grids: dict[int, np.ndarray] = {}

    def picture(self, model) -> np.ndarray:
        from damoxing.tasks import draw_samples

        images = draw_samples(model, self.n, self.seed).cpu().numpy()
        return grid_image(to_display(images, self.preprocessing))

    def after_epoch(self, model, epoch: int) -> None:
        if self.every and epoch % self.every == 0:
            self.grids[epoch] = self.picture(model)

    def write(self, model, folder: Path) -> None:
        """samples_epoch_K.png for each kept epoch, and samples.png from the final (saved) weights."""
        for epoch, picture in self.grids.items():
            save_png(picture, Path(folder) / f"samples_epoch_{epoch}.png")
        save_png(self.picture(model), Path(folder) / "samples.png")


def generate_images(run_path: str | Path, n: int = GRID_SAMPLES, seed: int = 0, out: str | Path | None = None,
                    interpolate: bool = False) -> Path:
    """Images from a saved vae/gan run: a PNG grid (`out` ending .png) or arrays (`.npz`, key `images`).

    Args:
        run_path: a run folder whose task is generation on images.
        n: how many images.
        seed: the noise seed; the same seed gives the same images.
        out: FILE.png (a grid; a single row for --interpolate) or FILE.npz (`images`: float32
            (n, C, H, W) in the data's own units, e.g. 0-16 for the digits).
        interpolate: vae only: n images along a straight line between two latent points.
    Returns:
        the path written.
    """
    from damoxing.inference.predictor import load

    predictor = load(run_path)
    schema, model_type = predictor.schema, predictor.config.model.type
    if predictor.task_name != "generation":
        raise UserError(f"'{run_path}' is a {predictor.task_name} run (model '{model_type}'); generating images needs a run of "
                        "a generative model (model.type vae or gan, task generation).")
    if schema.kind != "image":
        raise UserError(f"'{run_path}' models {schema.kind} data; `generate` writes images, so it needs a vae or gan trained on images.")
    if out is None:
        raise UserError("Say where to write the images: --out FILE.png (a grid) or --out FILE.npz (arrays, key 'images').")
    out = Path(out)
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise UserError(f"--out '{out}' must end in .png (a grid of images) or .npz (the images as arrays, key 'images').")
    if n < 1 or n > 10_000:
        raise UserError(f"--n is {n}; ask for between 1 and 10000 images.")
    if interpolate and not isinstance(predictor.model, Interpolates):
        raise UserError(f"--interpolate needs a model with an encoder's latent space (model.type vae); '{run_path}' is a '{model_type}' run. "
                        "Leave out --interpolate to draw samples.")

    import torch

    from damoxing.tasks import draw_samples

    if interpolate:
        with torch.no_grad():
            images = predictor.model.eval().interpolate(n, torch.Generator().manual_seed(seed)).float()
    else:
        images = draw_samples(predictor.model, n, seed)
    images = images.cpu().numpy()
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".npz":
        np.savez(out, images=predictor.preprocessing.inputs.inverse_transform(images).astype(np.float32))
        return out
    return save_png(grid_image(to_display(images, predictor.preprocessing), columns=n if interpolate else None), out)
