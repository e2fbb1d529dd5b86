"""Accuracy of a network on a dataset split."""

from __future__ import annotations

import torch

from sakd.data import ImageSet, iterate_batches
from sakd.engine.runtime import Runtime


@torch.inference_mode()
def accuracy(
    model: torch.nn.Module, data: ImageSet, runtime: Runtime, batch_size: int = 256
) -> tuple[float, float]:
    """Top-1 and top-5 accuracy (%) of ``model`` on ``data`` (eval mode, no augmentation)."""
    was_training = model.training
    model.eval()
    hits = torch.zeros(2, dtype=torch.long, device=runtime.device)
    total = 0
    for images, labels, _ in iterate_batches(
        data, batch_size, train=False, seed=0, epoch=0, device=runtime.device
    ):
        with runtime.autocast():
            logits = model(runtime.prepare_images(images))
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        match = top == labels[:, None]
        hits[0] += match[:, 0].sum()
        hits[1] += match.any(dim=1).sum()
        total += labels.numel()
    model.train(was_training)
    top1, top5 = hits.tolist()
    return 100.0 * top1 / max(total, 1), 100.0 * top5 / max(total, 1)
