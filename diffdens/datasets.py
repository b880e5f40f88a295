"""Data sets for the chapters and benchmarks (loaders only; dequantization and bits/dim are in :mod:`diffdens.data`).

Each loader imports what it needs when called (scikit-learn: the ``[book]`` extra), so the core install imports this
module without it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["load_digits"]


def load_digits():
    """scikit-learn's 8x8 digits (shipped with scikit-learn, no download; needs the ``[book]`` extra).

    Returns:
        ``(k, labels, levels)``: k (1797, 64) int32 pixel values in {0, ..., 16}, labels (1797,) the digits, and
        levels = 17.
    """
    try:
        from sklearn.datasets import load_digits as _load
    except ImportError as e:
        raise ImportError("diffdens.datasets.load_digits needs scikit-learn: pip install 'diffdens[book]'") from e

    d = _load()
    return np.asarray(d.data, dtype=np.int32), np.asarray(d.target), 17
