"""The input contract of a trained network: how a raw image becomes the tensor the network was fed.

A run records it in ``run.json`` (``input``) and an export writes it beside the weights
(``student.json``), so a deployer never has to guess the normalisation sakd used:

* ``mean`` / ``std``: per channel, on the 0-1 scale: ``x = (image / 255 - mean) / std``;
* ``size``: (H, W) of the network's input;
* ``resize`` / ``crop``: the evaluation geometry. A streamed split (folders, ImageNet-style) resizes
  the shorter side to ``resize`` (bilinear, antialiased) and takes the central ``crop`` x ``crop``;
  a split held in memory was fed as it is (both None: an image of another size is resized to
  ``size``);
* ``class_names``: the name of each output, in order.

:class:`InputTransform` applies it with torch ops (no torchvision needed): a PIL image, or a
C x H x W / N x C x H x W tensor (uint8 0-255, or float 0-1), in; float32 normalised out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from sakd.data.augment import normalize
from sakd.data.streaming import to_uint8_chw
from sakd.data.transforms import center_crop_box, eval_resize_size, resize, shorter_side_size


@dataclass(frozen=True)
class InputContract:
    """What a network expects as input (see the module docstring)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    size: tuple[int, int]
    class_names: tuple[str, ...]
    resize: int | None = None
    crop: int | None = None

    @classmethod
    def of_source(cls, source: Any) -> InputContract:
        """The contract of an evaluation source (:class:`ImageSet` or :class:`StreamSet`)."""
        geometry: dict[str, int | None] = {}
        transform = getattr(source, "eval_transform", None)
        if transform is not None:  # a streamed split: resize the shorter side, centre crop
            geometry = {
                "resize": eval_resize_size(transform.size, transform.crop_fraction),
                "crop": transform.size,
            }
        return cls(
            mean=tuple(float(v) for v in source.mean),
            std=tuple(float(v) for v in source.std),
            size=tuple(int(v) for v in source.image_size),
            class_names=tuple(str(n) for n in source.class_names),
            **geometry,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping (``run.json``'s ``input``, ``student.json``)."""
        return {
            "mean": list(self.mean),
            "std": list(self.std),
            "input_size": list(self.size),
            "resize": self.resize,
            "crop": self.crop,
            "class_names": list(self.class_names),
        }

    @classmethod
    def from_dict(cls, values: Any) -> InputContract:
        """The contract in a mapping written by :meth:`to_dict`; ``ValueError`` when malformed."""
        try:
            contract = cls(
                mean=tuple(float(v) for v in values["mean"]),
                std=tuple(float(v) for v in values["std"]),
                size=tuple(int(v) for v in values["input_size"]),
                class_names=tuple(str(n) for n in values["class_names"]),
                resize=None if values.get("resize") is None else int(values["resize"]),
                crop=None if values.get("crop") is None else int(values["crop"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ValueError("not an input contract (mean, std, input_size, class_names)") from None
        if len(contract.mean) != len(contract.std) or len(contract.size) != 2:
            raise ValueError("not an input contract (mean/std lengths or input_size)")
        if not all(s > 0 for s in contract.std):
            raise ValueError("not an input contract (std must be positive)")
        return contract


class InputTransform:
    """Raw image(s) -> the normalised float32 tensor the network was evaluated on (torch ops only).

    ``transform(image)``: a PIL image or a (C, H, W) tensor gives (3, H', W'); an (N, C, H, W)
    tensor gives (N, 3, H', W'). Floats are read as 0-1 and rounded to 0-255 first, as sakd's data
    pipeline does; anything else is a one-line :class:`~sakd.errors.SakdError`.
    """

    def __init__(self, contract: InputContract) -> None:
        self.contract = contract

    def __repr__(self) -> str:
        c = self.contract
        return (
            f"InputTransform(resize={c.resize}, crop={c.crop}, size={list(c.size)}, "
            f"mean={list(c.mean)}, std={list(c.std)})"
        )

    def geometry(self, image: Tensor) -> Tensor:
        """uint8 (C, H, W) -> uint8 (C, H', W'): the evaluation resize and crop of the contract."""
        c = self.contract
        height, width = image.shape[-2:]
        if c.resize is not None and c.crop is not None:
            new_h, new_w = shorter_side_size(height, width, c.resize)
            image = resize(image, new_h, new_w)
            top, left = center_crop_box(new_h, new_w, c.crop)
            return image[:, top : top + c.crop, left : left + c.crop]
        if (height, width) != tuple(c.size):
            image = resize(image, *c.size)
        return image

    def __call__(self, image: Any) -> Tensor:
        """Raw image(s) in, normalised float32 out (see the class docstring)."""
        if isinstance(image, (Tensor, np.ndarray)) and image.ndim == 4:
            return torch.stack([self._one(one) for one in image])
        return self._one(image)

    def _one(self, image: Any) -> Tensor:
        pixels = self.geometry(to_uint8_chw(image, "the image"))
        return normalize(pixels[None], self.contract.mean, self.contract.std)[0]


class Normalized(nn.Module):
    """``model((x - mean) / std)``: a network that takes raw [0, 1] images (N, 3, H, W)."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: Tensor) -> Tensor:
        """(N, 3, H, W) in [0, 1] -> logits (N, classes)."""
        return self.model((images - self.mean) / self.std)
