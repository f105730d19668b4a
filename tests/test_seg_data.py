"""The offline segmentation set (weights_tools.seg_data): deterministic, disjoint splits."""

from __future__ import annotations

import numpy as np
import pytest

from weights_tools import data as D
from weights_tools import seg_data as S


def test_digit_split_matches_classification_holdout():
    train, train_labels = S.digit_split("train")
    hold, hold_labels = S.digit_split("holdout")
    assert len(train) + len(hold) == 1797
    assert np.bincount(hold_labels).tolist() == [D.DIGITS_HOLDOUT_PER_CLASS] * 10
    _, cls_labels = D.digits_arrays("holdout")
    assert np.array_equal(np.sort(cls_labels), np.sort(hold_labels))
    # No held-out digit is also a training digit (the 8x8 bitmaps, compared whole).
    train_keys = {t.tobytes() for t in train}
    assert sum(h.tobytes() in train_keys for h in hold) <= 2  # the UCI set has a few duplicates
    assert train.min() >= 0 and train.max() <= 1


def test_photo_regions_are_disjoint():
    train = S.photo_regions("train")
    hold = S.photo_regions("holdout")
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    for t, h, p in zip(train, hold, photos):
        assert t.shape[1] + h.shape[1] == p.shape[1]
        assert np.array_equal(t, p[:, : S.PHOTO_SPLIT_X])
        assert np.array_equal(h, p[:, S.PHOTO_SPLIT_X :])


def test_scenes_are_deterministic_and_labelled():
    a_img, a_mask = S.scene_arrays("holdout", 12, seed=3)
    b_img, b_mask = S.scene_arrays("holdout", 12, seed=3)
    c_img, _ = S.scene_arrays("holdout", 12, seed=4)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_mask, b_mask)
    assert not np.array_equal(a_img, c_img)
    assert a_img.shape == (12, S.SCENE_SIZE, S.SCENE_SIZE, 3) and a_img.dtype == np.uint8
    values = set(np.unique(a_mask).tolist())
    assert values <= set(range(11)) | {S.IGNORE_INDEX}
    assert 0 in values and S.IGNORE_INDEX in values
    for m in a_mask:  # every scene holds at least one digit
        assert ((m >= 1) & (m <= 10)).any()


def test_label_comes_from_the_digit_pixels():
    # One digit on a flat grey photo: the labelled pixels are where it was drawn.
    rng = np.random.default_rng(0)
    digits, labels = S.digit_split("holdout")
    flat = [np.full((200, 200, 3), 128, np.uint8)]
    img, mask = S.compose_scene(rng, digits[:1], labels[:1], flat, size=64)
    cls = int(labels[0]) + 1
    assert set(np.unique(mask).tolist()) <= {0, cls, S.IGNORE_INDEX}
    diff = np.abs(img.astype(int) - 128).max(axis=2)
    # Digit pixels differ from the (gain-shifted, noisy) background far more than background
    # pixels do among themselves.
    assert np.median(diff[mask == cls]) > np.percentile(diff[mask == 0], 90)


def test_training_items_depend_on_epoch():
    ds = S.DigitScenes(4, seed=1)
    x0, y0 = ds[2]
    x0b, _ = ds[2]
    ds.set_epoch(1)
    x1, _ = ds[2]
    assert x0.shape == (3, S.SCENE_SIZE, S.SCENE_SIZE) and y0.dtype.is_floating_point is False
    assert np.array_equal(x0.numpy(), x0b.numpy())
    assert not np.array_equal(x0.numpy(), x1.numpy())


def test_bad_split():
    with pytest.raises(ValueError, match="split"):
        S.digit_split("test")
