"""Every registered estimator and sampler (tests/contract.py REGISTRY) on image-shaped points: a score on points of
event shape (2, 1, 1) (the flat mixture score reshaped) gives the flat call's result, reshaped (issue 24; the
U-Net's own points: tests/test_unet_points.py)."""

import jax
import numpy as np
import pytest

from contract import P, REGISTERED as NAMES, TK, XS, as_event_score, run_registered, tol_for

EVENT = (2, 1, 1)


@pytest.mark.parametrize("name", NAMES)
def test_image_points_equal_flat(name):
    flat = run_registered(name, P.score, XS, TK)
    img = run_registered(name, as_event_score(P.score, EVENT), XS.reshape((-1,) + EVENT), TK,
                         shape=(XS.shape[0],) + EVENT)
    la, lb = jax.tree_util.tree_leaves(flat), jax.tree_util.tree_leaves(img)
    assert len(la) == len(lb)
    for a, b in zip(la, lb):
        a, b = np.asarray(a), np.asarray(b)
        if b.ndim > a.ndim:  # points or samples keep the event shape
            assert b.shape[-len(EVENT):] == EVENT, (name, b.shape)
            b = b.reshape(a.shape)
        assert a.shape == b.shape, (name, a.shape, b.shape)
        np.testing.assert_allclose(a, b, **tol_for(name))
