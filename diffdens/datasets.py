"""Data sets for the chapters and benchmarks (loaders only; dequantization and bits/dim are in :mod:`diffdens.data` and
:mod:`diffdens.dequantization`).

Each loader imports what it needs when called (scikit-learn: the ``[book]`` extra), so the core install imports this
module without it. Nothing is downloaded: both sources ship inside scikit-learn. Any other data set a user has is an
array.
"""

from __future__ import annotations

import numpy as np

from ._checks import check_option, check_positive_int

__all__ = ["digits", "load_digits", "photo_patches"]

SPLITS = ("train", "test")
TRAIN_FRACTION = 0.75  # photo_patches: the left 3/4 of each photograph's width is the training region


def _sklearn_datasets(what: str):
    try:
        from sklearn import datasets
    except ImportError as e:
        raise ImportError(f"diffdens.datasets.{what} needs scikit-learn: pip install 'diffdens[book]'") from e
    return datasets


def load_digits():
    """scikit-learn's 8x8 digits (shipped with scikit-learn, no download; needs the ``[book]`` extra).

    Returns:
        ``(k, labels, levels)``: k (1797, 64) int32 pixel values in {0, ..., 16}, labels (1797,) the digits, and
        levels = 17.
    """
    d = _sklearn_datasets("load_digits").load_digits()
    return np.asarray(d.data, dtype=np.int32), np.asarray(d.target), 17


def digits():
    """The 8x8 handwritten digits as images (scikit-learn's copy of the UCI optical digits test set; needs the
    ``[book]`` extra).

    Data set card:

    * Source: ``sklearn.datasets.load_digits`` (the test part of the UCI "Optical Recognition of Handwritten Digits"
      data set, Alpaydin and Kaynak 1998), shipped with scikit-learn.
    * Licence: CC BY 4.0 (as the UCI repository states it).
    * Counts: 1797 images of 8x8 pixels, one channel; labels 0-9 from :func:`load_digits`.
    * Levels: 17 (each pixel counts the set pixels of a 4x4 block of a 32x32 bitmap, 0..16), so
      ``levels=17`` in :func:`diffdens.discrete_log_prob` and :func:`diffdens.bits_per_dim`.
    * No train/test split is made here (split the array; :func:`load_digits` gives the labels).

    Returns:
        (1797, 8, 8, 1) uint8 pixel values in {0, ..., 16}.
    """
    k, _, _ = load_digits()
    return k.reshape(-1, 8, 8, 1).astype(np.uint8)


def photo_patches(size: int = 8, split: str = "train"):
    """Non-overlapping RGB patches of the two photographs scikit-learn ships, a real 8-bit image data set with no
    download (needs the ``[book]`` extra).

    Data set card:

    * Source: ``sklearn.datasets.load_sample_images()``: ``china.jpg`` (a temple) and ``flower.jpg`` (a flower),
      each 427 x 640 x 3 uint8 (JPEG-decoded, so compression artefacts are part of the data).
    * Licence, as scikit-learn states it: both "Released under a creative commons license" (CC BY 2.0,
      https://creativecommons.org/licenses/by/2.0/), "Some rights reserved" by their Flickr authors
      (danielbuechele for china.jpg, vultilion for flower.jpg); retrieved 21 August 2011 by Robert Layton.
    * Splits: each photograph is cut at 3/4 of its width; ``"train"`` patches come from the left 3/4 (columns
      0..479), ``"test"`` patches from the right 1/4 (columns 480..639), so no pixel is in both splits (spatially
      disjoint regions, hence a mild distribution shift between them, as between photographs).
    * Patches: a non-overlapping grid of ``size`` x ``size`` tiles within each region, row-major, china.jpg first;
      leftover rows and columns are dropped. For ``size=8``: 53 rows of tiles; 60 columns per photograph in train
      (6360 patches), 20 in test (2120 patches).
    * Levels: 256 per channel (uint8), so ``levels=256`` in :func:`diffdens.discrete_log_prob`; D = 3 size^2.

    Arguments:
        size: the patch side in pixels (a positive integer, at most 160).
        split: ``"train"`` or ``"test"``.

    Returns:
        (n, size, size, 3) uint8 patches.
    """
    size = check_positive_int(size, "size")
    check_option(split, SPLITS, "split")
    images = _sklearn_datasets("photo_patches").load_sample_images().images
    out = []
    for img in images:
        img = np.asarray(img, dtype=np.uint8)
        cut = int(round(TRAIN_FRACTION * img.shape[1]))
        region = img[:, :cut] if split == "train" else img[:, cut:]
        rows, cols = region.shape[0] // size, region.shape[1] // size
        if rows < 1 or cols < 1:
            raise ValueError(f"size={size} is larger than the {split} region {region.shape[:2]} of a photograph")
        tiles = region[: rows * size, : cols * size].reshape(rows, size, cols, size, 3).swapaxes(1, 2)
        out.append(tiles.reshape(-1, size, size, 3))
    return np.concatenate(out)
