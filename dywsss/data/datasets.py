"""torch datasets over VOC lists: original images (map stage) and transformed tensors (training, loss)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .voc import PathLike, image_path, label_matrix, load_image


class VOCImages(Dataset):
    """Unnormalised original images with labels, for stages that do their own scaling.

    Item: ``dict(name=str, image=np.uint8 [H, W, 3], label=FloatTensor[20])``. Use
    ``collate_fn=collate_images`` (or batch_size=None) since image sizes differ.
    """

    def __init__(
        self,
        names: Sequence[str],
        voc12_root: PathLike,
        labels: Mapping[str, np.ndarray],
        img_dir: str = "JPEGImages",
    ) -> None:
        self.names = list(names)
        self.voc12_root = Path(voc12_root)
        self.img_dir = img_dir
        self.labels = label_matrix(self.names, labels)

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, idx: int) -> dict:
        name = self.names[idx]
        img = load_image(image_path(self.voc12_root, name, self.img_dir))
        return dict(name=name, image=img, label=torch.from_numpy(self.labels[idx].copy()))


class VOCClassification(VOCImages):
    """Images with multi-hot labels for training / validation.

    Item: ``dict(name=str, img=FloatTensor[3, H, W], label=FloatTensor[20])``;
    ``transform`` maps the uint8 HxWx3 RGB image to the tensor.
    """

    def __init__(
        self,
        names: Sequence[str],
        voc12_root: PathLike,
        labels: Mapping[str, np.ndarray],
        transform: Callable[[np.ndarray], torch.Tensor],
        img_dir: str = "JPEGImages",
    ) -> None:
        super().__init__(names, voc12_root, labels, img_dir)
        self.transform = transform

    def __getitem__(self, idx: int) -> dict:
        item = super().__getitem__(idx)
        return dict(name=item["name"], img=self.transform(item["image"]), label=item["label"])


def collate_images(batch: list[dict]) -> dict:
    """Batch :class:`VOCImages` items: names and images as lists, labels stacked."""
    return dict(
        name=[b["name"] for b in batch],
        image=[b["image"] for b in batch],
        label=torch.stack([b["label"] for b in batch]),
    )
