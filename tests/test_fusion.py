from __future__ import annotations

import numpy as np
import pytest

from edge_had.detectors import fuse_scores, normalize_minmax


def test_minmax_maps_finite_values_to_unit_interval_and_keeps_nan():
    out = normalize_minmax(np.array([2.0, 4.0, np.nan, 3.0]))
    np.testing.assert_array_equal(out, [0.0, 1.0, np.nan, 0.5])
    np.testing.assert_array_equal(normalize_minmax(np.full(3, 7.0)), np.zeros(3))


def test_sum_and_product_of_normalised_maps():
    a = np.array([0.0, 5.0, 10.0])
    b = np.array([1.0, 3.0, 2.0])
    np.testing.assert_allclose(fuse_scores([a, b], "sum"), [0.0, 1.5, 1.5])
    np.testing.assert_allclose(fuse_scores([a, b], "product"), [0.0, 0.5, 0.5])


def test_fusion_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown fusion"):
        fuse_scores([np.zeros(2)], "max")
    with pytest.raises(ValueError, match="differ in shape"):
        fuse_scores([np.zeros(2), np.zeros(3)])
    with pytest.raises(ValueError, match="no finite"):
        normalize_minmax(np.array([np.nan]))


def test_a_constant_map_is_neutral_in_a_product():
    """A constant map ranks nothing; normalised it is zeros, which would erase the other map's
    ranking in a product (a review): in a product it counts as ones instead."""
    ranking = np.array([1.0, 3.0, 2.0, np.nan])
    np.testing.assert_allclose(fuse_scores([ranking, np.full(4, 7.0)], "product"), [0.0, 1.0, 0.5, np.nan])


def test_normalize_minmax_scales_over_the_finite_values_only():
    out = normalize_minmax(np.array([0.0, 1.0, 2.0, np.inf, np.nan]))
    np.testing.assert_allclose(out[:3], [0.0, 0.5, 1.0])
    assert np.isnan(out[4])
