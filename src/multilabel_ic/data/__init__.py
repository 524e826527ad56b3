"""Data formats over plain records (relative image path, multi-hot labels): COCO, .lst, RecordIO, manifests."""

from .dataset import Dataset
from .lst import read_lst, write_lst
from .manifest import read_manifest, write_manifest
from .recordio import IRHeader, RecordIOReader, pack, read_recordio, unpack, write_recordio
from .split import iterative_stratification, random_split
from .synthetic import COCO5, generate_coco

__all__ = ["Dataset", "read_lst", "write_lst", "read_manifest", "write_manifest", "IRHeader", "RecordIOReader",
           "pack", "unpack", "read_recordio", "write_recordio", "iterative_stratification", "random_split",
           "generate_coco", "COCO5"]
