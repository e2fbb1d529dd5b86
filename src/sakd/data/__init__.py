"""Datasets as in-memory tensors, batched augmentation, verified downloads."""

from sakd.data.augment import augment_batch, crop_flip, draw_crop_flip, normalize
from sakd.data.batching import epoch_generator, iterate_batches, num_batches
from sakd.data.imageset import AugmentSpec, ImageSet, channel_stats
from sakd.data.registry import list_datasets, load_dataset

__all__ = [
    "AugmentSpec",
    "ImageSet",
    "augment_batch",
    "channel_stats",
    "crop_flip",
    "draw_crop_flip",
    "epoch_generator",
    "iterate_batches",
    "list_datasets",
    "load_dataset",
    "normalize",
    "num_batches",
]
