"""Issue 24: the data sets (photo patches from scikit-learn's sample photographs; the digits as images)."""

import numpy as np
import pytest

pytest.importorskip("sklearn")


def test_photo_patches():
    from diffdens import datasets

    train, test = datasets.photo_patches(8, "train"), datasets.photo_patches(8, split="test")
    assert train.dtype == np.uint8 and test.dtype == np.uint8
    assert train.shape == (6360, 8, 8, 3) and test.shape == (2120, 8, 8, 3)
    # disjoint: no test patch occurs in train (the regions do not overlap; check by content as well)
    seen = {p.tobytes() for p in train}
    assert not any(p.tobytes() in seen for p in test)
    assert datasets.photo_patches(4, "test").shape == (8480, 4, 4, 3)
    d = datasets.digits()
    assert d.shape == (1797, 8, 8, 1) and d.dtype == np.uint8 and int(d.max()) == 16
    with pytest.raises(ValueError, match="split"):
        datasets.photo_patches(8, "valid")
