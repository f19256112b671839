"""What every reader returns, and what the readers share (file lookup, splits, image decoding)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from elf_pipeline.datasets.catalog import ROOT_LAYOUT
from elf_pipeline.infra.errors import DataSourceError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")




@dataclass
class RawDataset:
    """A dataset small enough to decode at once (MNIST, CIFAR, SVHN, ...)."""

    train_images: np.ndarray  # uint8 NHWC
    train_labels: np.ndarray  # int64 N
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: list[str]


@dataclass
class ImageFiles:
    """A dataset of image files, decoded chunk by chunk while ``data.h5`` is written."""

    train_files: list[Path]
    train_labels: np.ndarray  # int64
    test_files: list[Path]
    test_labels: np.ndarray
    classes: list[str]
    channels: int = 3


def require_root(root: str | os.PathLike | None, source: str, help_text: str = "") -> Path:
    """``root`` as a Path, or a DataSourceError saying what the folder must hold."""
    layout = ROOT_LAYOUT.get(source, "the dataset files")
    hint = f"; {help_text}" if help_text else ""
    if root is None:
        raise DataSourceError(f"{source}: no root configured; set datasets.<name>.root to a folder holding {layout}{hint}")
    path = Path(root)
    if not path.is_dir():
        raise DataSourceError(f"{path}: dataset folder not found ({source} expects {layout}){hint}")
    return path


def find_dir(root: Path, names: tuple[str, ...], marker: str) -> Path | None:
    """The first of ``root/<name>`` (and ``root`` itself) that contains ``marker``."""
    for candidate in (*(root / name for name in names), root):
        if (candidate / marker).exists():
            return candidate
    return None


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> np.ndarray:
    """Boolean test mask: ``round(n_c * test_fraction)`` images of every class, chosen with ``seed``."""
    if not 0.0 < test_fraction < 1.0:
        raise DataSourceError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction}")
    rng = np.random.default_rng(seed)
    test_mask = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        index = np.flatnonzero(labels == label)
        n_test = int(round(len(index) * test_fraction))
        test_mask[rng.choice(index, size=n_test, replace=False)] = True
    return test_mask


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def decode_image(path: Path, size: int, resize: str, channels: int) -> np.ndarray:
    """One image file -> uint8 HWC array of ``size``x``size``.

    ``interpolate``: scale the shorter side to ``size`` (bilinear, antialiased) and crop the centre,
    the Resize+CenterCrop convention of the ImageNet-subset papers.  ``pad``: centre the image on a
    zero canvas (it must not be larger than ``size``).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB")
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise DataSourceError(f"{path}: cannot decode image ({err})") from None
    width, height = image.size
    if (width, height) != (size, size):
        if resize == "pad":
            if width > size or height > size:
                raise DataSourceError(f"{path}: a {width}x{height} image does not fit image_size {size} with resize: pad; "
                                      "use resize: interpolate")
            canvas = Image.new(image.mode, (size, size))
            canvas.paste(image, ((size - width) // 2, (size - height) // 2))
            image = canvas
        elif resize == "interpolate":
            scale = size / min(width, height)
            new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
            image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
            left, top = (new_w - size) // 2, (new_h - size) // 2
            image = image.crop((left, top, left + size, top + size))
        else:
            raise DataSourceError(f"unknown resize mode {resize!r} (allowed: pad, interpolate)")
    array = np.asarray(image, dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array


def torchvision_download(source: str, dataset: str, root: Path, splits: tuple[dict, ...]) -> None:
    """Let torchvision fetch (and checksum) ``dataset`` into ``root``; only with ``download: true``."""
    import torchvision.datasets

    root.mkdir(parents=True, exist_ok=True)
    for split in splits:
        try:
            getattr(torchvision.datasets, dataset)(root=str(root), download=True, **split)
        except Exception as err:  # network, checksum and archive errors all end the same way
            raise DataSourceError(f"{root}: downloading {dataset} failed ({err.__class__.__name__}: {err}); "
                                  f"put the files there by hand ({ROOT_LAYOUT[source]})") from None
