"""The data layer: data sets (CIFAR, Tiny ImageNet, image folders), their splits and
transforms, the in-memory batched data path, and the one rule that cuts an epoch into
batches. It imports nothing else of the package (torchvision, PIL and tqdm only inside the
functions that need them).
"""

from tickets.data.batching import num_batches, batch_sizes, steps_per_epoch, split_batches, EpochBatchSampler, check_loader_kwargs
from tickets.data.transforms import Normalize, Augment, random_transform
from tickets.data.images import IMAGE_EXTENSIONS, ImageDataset, BatchLoader, batch_loader
from tickets.data.splits import validation_indices, balanced_subset, stratified_subset, stratified_split
from tickets.data.folders import load_image_folder
from tickets.data.datasets import DatasetInfo, DATASETS, DataSplits, load_dataset, IMAGENET_MEAN, IMAGENET_STD, FOLDER_VAL_FRACTION, FOLDER_TEST_FRACTION, FOLDER_IN_MEMORY_BYTES, load_folder_dataset
from tickets.data.sampling import IndexedDataset, dataset_of, targets_of

__all__ = [
    'num_batches',
    'batch_sizes',
    'steps_per_epoch',
    'split_batches',
    'EpochBatchSampler',
    'check_loader_kwargs',
    'Normalize',
    'Augment',
    'random_transform',
    'IMAGE_EXTENSIONS',
    'ImageDataset',
    'BatchLoader',
    'batch_loader',
    'validation_indices',
    'balanced_subset',
    'stratified_subset',
    'stratified_split',
    'load_image_folder',
    'DatasetInfo',
    'DATASETS',
    'DataSplits',
    'load_dataset',
    'IMAGENET_MEAN',
    'IMAGENET_STD',
    'FOLDER_VAL_FRACTION',
    'FOLDER_TEST_FRACTION',
    'FOLDER_IN_MEMORY_BYTES',
    'load_folder_dataset',
    'IndexedDataset',
    'dataset_of',
    'targets_of',
]
