"""Image folders in the ImageNet layout: `root/train/<class>/*.jpg|png`, `root/val/<class>/*`.

Images are decoded by PIL through `torchvision.datasets.ImageFolder` (as RGB), the shorter side
resized to `image_size * 8 / 7` (256 for 224), centre-cropped to `image_size` and scaled to
[0, 1]. Classes are the sub-folder names of `root/train`, sorted. The set stays on disk (it is
not a `TensorDataset`); the test split is `root/val`. A file PIL cannot decode raises a
`ValueError` naming it when it is read; a split without class folders or images is refused.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from nettle.train.datasets.base import DatasetInfo, register_dataset, require_root

__all__ = ["IMAGEFOLDER_INFO", "folder_classes", "load_rgb"]

log = logging.getLogger(__name__)

DEFAULT_SIZE = 224
IMAGEFOLDER_INFO = DatasetInfo(
    name="imagefolder",
    num_classes=1000,
    in_channels=3,
    image_size=(DEFAULT_SIZE, DEFAULT_SIZE),
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
)


def folder_classes(folder: Path) -> tuple[str, ...]:
    """The sorted names of the sub-folders of `folder` (ImageFolder's class order)."""
    return tuple(sorted(d.name for d in folder.iterdir() if d.is_dir()))


def load_rgb(path: str) -> Image.Image:
    """Decode an image file as RGB; a file PIL cannot decode raises `ValueError` naming it.

    Images of more than `Image.MAX_IMAGE_PIXELS` pixels (a decompression bomb) are refused.
    """
    try:
        with warnings.catch_warnings(), open(path, "rb") as f:
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(f).convert("RGB")
    except UnidentifiedImageError:
        reason = "not an image format PIL knows"
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        reason = f"more than {Image.MAX_IMAGE_PIXELS:,} pixels"
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        reason = next(iter(str(exc).splitlines()), "") or type(exc).__name__
    raise ValueError(f"{path}: unreadable image ({reason}); remove or replace the file")


def _describe(info: DatasetInfo, root: Path) -> DatasetInfo:
    train = root / "train"
    if not train.is_dir():
        return info
    classes = folder_classes(train)
    if not classes:
        raise ValueError(_no_classes(train))
    return dataclasses.replace(info, num_classes=len(classes), classes=classes)


def _no_classes(folder: Path) -> str:
    return f"imagefolder: {folder} has no class folders (expected {folder}/<class>/*.jpg|png)"


@register_dataset(IMAGEFOLDER_INFO, describe=_describe)
def _load_imagefolder(
    split: str, root: Path | None, image_size: int | None, download: bool
) -> Dataset:
    import torchvision
    from torchvision import transforms

    root = require_root("imagefolder", root)
    if download:
        log.warning("imagefolder cannot be downloaded; reading %s as it is", root)
    folder = root / ("train" if split == "train" else "val")
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder} not found (expected {root}/train/<class>/ and {root}/val/<class>/)"
        )
    size = image_size or DEFAULT_SIZE
    transform = transforms.Compose(
        [
            transforms.Resize(size * 8 // 7),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
        ]
    )
    if not folder_classes(folder):
        raise ValueError(_no_classes(folder))
    try:
        data = torchvision.datasets.ImageFolder(str(folder), transform=transform, loader=load_rgb)
    except FileNotFoundError as exc:  # a class folder without images
        raise ValueError(f"imagefolder: {folder}: {exc}".strip()) from None
    train_classes = folder_classes(root / "train") if (root / "train").is_dir() else None
    if train_classes is not None and tuple(data.classes) != train_classes:
        raise ValueError(
            f"{folder}: its {len(data.classes)} class folders differ from the "
            f"{len(train_classes)} in {root / 'train'}; the labels would not match"
        )
    return data
