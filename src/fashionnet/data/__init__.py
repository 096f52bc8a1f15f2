"""Bytes -> arrays: the formats users bring, finding the data, splits and batches.

formats: IDX, CSV and NPZ readers with one-line errors; load: discovery, train/test splits,
class names, float conversion, validation split, batches. Imports nothing else of fashionnet.
"""

from .formats import ZIP_ERRORS, DataError, Split, read_csv, read_idx
from .image_folders import class_of
from .load import (
    CLASS_NAMES,
    CSV_FILES,
    ENV_VAR,
    HOW_TO_GET_DATA,
    IDX_FILES,
    SYSTEM_DATA_DIR,
    Dataset,
    Splits,
    find_data,
    iterate_batches,
    load_fashion_mnist,
    load_split,
    load_splits,
    load_test_split,
    read_class_names,
    read_file,
    to_float,
    train_val_split,
    write_dataset,
)
from .npzfile import read_npz

__all__ = [
    "CLASS_NAMES",
    "CSV_FILES",
    "ENV_VAR",
    "HOW_TO_GET_DATA",
    "IDX_FILES",
    "SYSTEM_DATA_DIR",
    "ZIP_ERRORS",
    "DataError",
    "Dataset",
    "Split",
    "Splits",
    "class_of",
    "find_data",
    "iterate_batches",
    "load_fashion_mnist",
    "load_split",
    "load_splits",
    "load_test_split",
    "read_class_names",
    "read_csv",
    "read_file",
    "read_idx",
    "read_npz",
    "to_float",
    "train_val_split",
    "write_dataset",
]
