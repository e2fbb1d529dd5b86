"""Datasets as in-memory tensors or streamed from disk, batched augmentation, verified downloads."""

from sakd.data.augment import augment_batch, crop_flip, draw_crop_flip, normalize
from sakd.data.batching import epoch_generator, iterate_batches, num_batches
from sakd.data.imageset import AugmentSpec, ImageSet, channel_stats
from sakd.data.registry import list_datasets, load_dataset
from sakd.data.sources import BatchSource, from_dataset, iterate_source, open_stream
from sakd.data.streaming import StreamSet, sample_generator
from sakd.data.transforms import IMAGENET_MEAN, IMAGENET_STD, EvalTransform, TrainTransform

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "AugmentSpec",
    "BatchSource",
    "EvalTransform",
    "ImageSet",
    "StreamSet",
    "TrainTransform",
    "augment_batch",
    "channel_stats",
    "crop_flip",
    "draw_crop_flip",
    "epoch_generator",
    "from_dataset",
    "iterate_batches",
    "iterate_source",
    "list_datasets",
    "load_dataset",
    "normalize",
    "num_batches",
    "open_stream",
    "sample_generator",
]
