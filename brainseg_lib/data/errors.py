"""The errors the data layer raises: each says what is wrong and what to do."""
from __future__ import annotations


class DataError(RuntimeError):
    """Base class of every data problem this module reports."""


class DatasetNotFoundError(DataError, FileNotFoundError):
    """The dataset folder, a split folder or an annotation file is missing."""


class AnnotationError(DataError, ValueError):
    """An annotation file or region cannot be used."""


class ImageReadError(DataError, OSError):
    """An image file is missing, unreadable or corrupt."""
