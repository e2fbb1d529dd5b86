"""Accuracy of a network on a dataset split (sharded over the ranks of a data-parallel run)."""

from __future__ import annotations

import torch

from sakd.data import BatchSource, iterate_source
from sakd.engine.distributed import all_reduce_
from sakd.engine.runtime import Runtime


@torch.inference_mode()
def accuracy(
    model: torch.nn.Module, data: BatchSource, runtime: Runtime, batch_size: int = 256
) -> tuple[float, float]:
    """Top-1 and top-5 accuracy (%) of ``model`` on ``data`` (eval mode, no augmentation).

    With several ranks each evaluates its shard and the hit counts are summed; the shards are
    padded by wrapping around (rank r's k-th sample sits at position r + W·k of the split), so
    positions past the end are left out and every sample counts exactly once.
    """
    was_training = model.training
    model.eval()
    rank, world_size = runtime.rank, runtime.world_size
    num_samples = len(data)
    counts = torch.zeros(3, dtype=torch.long, device=runtime.device)
    seen = 0
    for images, labels, _ in iterate_source(
        data,
        batch_size,
        train=False,
        seed=0,
        epoch=0,
        device=runtime.device,
        rank=rank,
        world_size=world_size,
    ):
        with runtime.autocast():
            logits = model(runtime.prepare_images(images))
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        match = top == labels[:, None]
        position = rank + world_size * torch.arange(
            seen, seen + labels.numel(), device=runtime.device
        )
        counted = position < num_samples
        counts[0] += (match[:, 0] & counted).sum()
        counts[1] += (match.any(dim=1) & counted).sum()
        counts[2] += counted.sum()
        seen += labels.numel()
    model.train(was_training)
    top1, top5, total = all_reduce_(counts).tolist()
    return 100.0 * top1 / max(total, 1), 100.0 * top5 / max(total, 1)
