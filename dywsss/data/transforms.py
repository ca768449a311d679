"""Image transforms of the original recipe (spec, stage 1).

All randomness comes from torch's RNG, so ``torch.manual_seed`` and the
DataLoader's per-worker seeding make every transform reproducible. Inputs may
be PIL images or uint8 HxWx3 numpy arrays; outputs are float32 [3, H, W].
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from ..errors import ConfigError

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
DEFAULT_JITTER: dict[str, float] = dict(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.1)

ImageLike = Image.Image | np.ndarray


def _to_pil(img: ImageLike) -> Image.Image:
    if isinstance(img, Image.Image):
        return img.convert("RGB")
    arr = np.asarray(img)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected a uint8 HxWx3 image, got {arr.dtype} {arr.shape}")
    return Image.fromarray(arr)


def _to_array(img: ImageLike) -> np.ndarray:
    return np.asarray(_to_pil(img) if isinstance(img, Image.Image) else img)


def normalize_image(
    img: ImageLike, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> torch.Tensor:
    """uint8 HxWx3 RGB -> float32 [3, H, W], ``(x / 255 - mean) / std`` per channel."""
    arr = _to_array(img)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected a uint8 HxWx3 image, got {arr.dtype} {arr.shape}")
    x = torch.from_numpy(np.array(arr, dtype=np.float32)).permute(2, 0, 1).div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return (x - m) / s


def resize_long(img: Image.Image, long_side: int, resample: int = Image.BICUBIC) -> Image.Image:
    """Scale so that the longer side is ``long_side``, keeping the aspect ratio."""
    w, h = img.size
    scale = long_side / max(w, h)
    size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
    return img.resize(size, resample=resample)


def _paste_window(x: torch.Tensor, crop: int, top_offsets: tuple[int, int], left_offsets: tuple[int, int]) -> torch.Tensor:
    """Copy a ``crop`` x ``crop`` window of ``x`` into a zero canvas.

    For each axis ``(img_start, canvas_start)``: the image is read from
    ``img_start`` and written at ``canvas_start``; the copied length is
    ``min(crop, size)``, so an image smaller than the crop is zero padded.
    """
    _, h, w = x.shape
    ch, cw = min(crop, h), min(crop, w)
    (iy, cy), (ix, cx) = top_offsets, left_offsets
    out = x.new_zeros((x.shape[0], crop, crop))
    out[:, cy:cy + ch, cx:cx + cw] = x[:, iy:iy + ch, ix:ix + cw]
    return out


def _rand_int(high: int) -> int:
    """Uniform integer in [0, high] from torch's RNG."""
    return int(torch.randint(0, high + 1, (1,)).item())


def random_crop(x: torch.Tensor, crop: int) -> torch.Tensor:
    """Random ``crop`` x ``crop`` window; a side shorter than ``crop`` sits at a random place in zeros."""
    offsets = []
    for size in x.shape[1:]:
        slack = _rand_int(abs(size - crop))
        offsets.append((slack, 0) if size >= crop else (0, slack))
    return _paste_window(x, crop, offsets[0], offsets[1])


def center_crop(x: torch.Tensor, crop: int) -> torch.Tensor:
    """Centre ``crop`` x ``crop`` window, zero padded where the image is smaller.

    The offset is ``round(|size - crop| / 2)`` with Python's rounding, as in
    the original code.
    """
    offsets = []
    for size in x.shape[1:]:
        half = int(round(abs(size - crop) / 2))
        offsets.append((half, 0) if size >= crop else (0, half))
    return _paste_window(x, crop, offsets[0], offsets[1])


class TrainTransform:
    """Original training augmentation (spec, stage 1).

    Resize the long side to a random integer in ``resize_long`` (bicubic),
    horizontal flip, colour jitter, normalise, random ``crop_size`` crop with
    zero padding, then random erasing (probability ``cut_p``, area fraction in
    ``(0.02, cut_s)``, erased to 0 in normalised space).
    """

    def __init__(
        self,
        crop_size: int = 224,
        resize_long: Sequence[int] | None = (448, 768),
        color_jitter: Mapping[str, float] | None = None,
        cut_p: float = 0.0,
        cut_s: float = 0.25,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        self.crop_size = int(crop_size)
        if resize_long is not None:
            lo, hi = (int(v) for v in resize_long)
            if not 0 < lo <= hi:
                raise ConfigError(f"resize_long must be (lo, hi) with 0 < lo <= hi, got {resize_long}")
            self.resize_long = (lo, hi)
        else:
            self.resize_long = None
        jitter = DEFAULT_JITTER if color_jitter is None else dict(color_jitter)
        self.jitter = T.ColorJitter(**jitter) if any(jitter.values()) else None
        if cut_p > 0 and not 0.02 < cut_s <= 1:
            raise ConfigError(f"cut_s (largest erased fraction) must be in (0.02, 1], got {cut_s}")
        self.erase = T.RandomErasing(p=cut_p, scale=(0.02, cut_s), value=0) if cut_p > 0 else None
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, img: ImageLike) -> torch.Tensor:
        pil = _to_pil(img)
        if self.resize_long is not None:
            lo, hi = self.resize_long
            pil = resize_long(pil, lo + _rand_int(hi - lo))
        if torch.rand(1).item() < 0.5:
            pil = pil.transpose(Image.FLIP_LEFT_RIGHT)
        if self.jitter is not None:
            pil = self.jitter(pil)
        x = random_crop(normalize_image(pil, self.mean, self.std), self.crop_size)
        return self.erase(x) if self.erase is not None else x


class _SizedTransform:
    """A deterministic transform to a square ``size``, normalised with ``mean``/``std``."""

    def __init__(self, size: int = 224, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD) -> None:
        self.size = int(size)
        self.mean, self.std = tuple(mean), tuple(std)


class CenterCropTransform(_SizedTransform):
    """Original validation transform: normalise, then the ``size`` centre crop, zero padded."""

    @property
    def crop_size(self) -> int:
        return self.size

    def __call__(self, img: ImageLike) -> torch.Tensor:
        return center_crop(normalize_image(img, self.mean, self.std), self.size)


class FullImageTransform(_SizedTransform):
    """Resize the whole image to ``size`` x ``size`` (bilinear), then normalise (ViT inputs)."""

    def __call__(self, img: ImageLike) -> torch.Tensor:
        pil = _to_pil(img).resize((self.size, self.size), resample=Image.BILINEAR)
        return normalize_image(pil, self.mean, self.std)


#: The original training transform (``color_jitter=None``: brightness/contrast/saturation 0.3, hue 0.1).
train_transform = TrainTransform


def val_transform(crop_size: int = 224, mean: Sequence[float] = IMAGENET_MEAN,
                  std: Sequence[float] = IMAGENET_STD) -> Callable[[ImageLike], torch.Tensor]:
    """The original validation / per-sample-loss transform: centre crop of the unresized image."""
    return CenterCropTransform(crop_size, mean, std)


def full_image_transform(size: int = 224, mean: Sequence[float] = IMAGENET_MEAN,
                         std: Sequence[float] = IMAGENET_STD) -> Callable[[ImageLike], torch.Tensor]:
    """Resize the whole image to ``size`` x ``size`` and normalise."""
    return FullImageTransform(size, mean, std)


LOSS_INPUTS = ("center_crop", "full_image")


def prediction_transform(loss_input: str, size: int, mean: Sequence[float] = IMAGENET_MEAN,
                         std: Sequence[float] = IMAGENET_STD) -> Callable[[ImageLike], torch.Tensor]:
    """The classifier's input for the per-sample loss and predictions (``loss_input`` at ``size``).

    ``center_crop`` is the original's (the validation transform); ``full_image`` resizes the whole image.
    """
    if loss_input == "center_crop":
        return val_transform(size, mean, std)
    if loss_input == "full_image":
        return full_image_transform(size, mean, std)
    raise ConfigError(f"loss_input={loss_input!r}: expected one of {', '.join(LOSS_INPUTS)}")
