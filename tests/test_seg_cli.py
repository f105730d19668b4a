"""qbinfer's segmentation side without torch: palette, masks, overlays, mIoU, the commands."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import run_module

from qbinfer import cli_segment as CS


def test_voc_palette_known_colours():
    # The PASCAL VOC devkit's colour map (VOClabelcolormap): background, aeroplane, bicycle,
    # bird, boat, person (15), and the void colour of index 255.
    pal = CS.voc_palette()
    assert pal.shape == (256, 3) and pal.dtype == np.uint8
    assert pal[0].tolist() == [0, 0, 0]
    assert pal[1].tolist() == [128, 0, 0]
    assert pal[2].tolist() == [0, 128, 0]
    assert pal[3].tolist() == [128, 128, 0]
    assert pal[4].tolist() == [0, 0, 128]
    assert pal[15].tolist() == [192, 128, 128]
    assert pal[255].tolist() == [224, 224, 192]
    assert len({tuple(c) for c in pal.tolist()}) == 256  # every index its own colour


def test_mask_png_round_trip(tmp_path):
    from PIL import Image

    cmap = np.array([[0, 1, 2], [10, -1, 20]], np.int32)  # -1: outside the model's crop
    path = os.fspath(tmp_path / "m.png")
    CS.save_mask_png(cmap, path)
    with Image.open(path) as im:
        assert im.mode == "P"
        values = np.asarray(im)
        palette = np.asarray(im.getpalette()[: 256 * 3], np.uint8).reshape(256, 3)
    assert values.tolist() == [[0, 1, 2], [10, 255, 20]]
    assert np.array_equal(palette, CS.voc_palette())


def test_mask_rejects_classes_that_do_not_fit():
    with pytest.raises(ValueError, match="0..254"):
        CS.colorize(np.array([[255]]))
    with pytest.raises(ValueError, match="H x W"):
        CS.colorize(np.zeros((2, 2, 2), np.int32))


def test_overlay_by_hand(tmp_path):
    image = np.zeros((1, 4, 3), np.uint8)
    image[:] = (100, 50, 200)
    cmap = np.array([[0, 1, 15, -1]])
    out = CS.overlay(image, cmap)
    # background and void pixels unchanged; class 1 (128, 0, 0) and 15 (192, 128, 128) blended
    # half and half, rounded: (100 + 128) / 2 = 114, (50 + 0) / 2 = 25, (200 + 0) / 2 = 100.
    assert out[0, 0].tolist() == [100, 50, 200]
    assert out[0, 1].tolist() == [114, 25, 100]
    assert out[0, 2].tolist() == [146, 89, 164]
    assert out[0, 3].tolist() == [100, 50, 200]
    path = os.fspath(tmp_path / "o.png")
    CS.save_overlay_png(image, cmap, path)
    from PIL import Image

    with Image.open(path) as im:
        assert np.array_equal(np.asarray(im.convert("RGB")), out)
    with pytest.raises(ValueError, match="differ in size"):
        CS.overlay(image, np.zeros((2, 2), np.int32))


def test_miou_by_hand():
    # pixels (truth, prediction): (0,0) (1,1) (0,1) (void) (2,0) (2,2)
    truth = np.array([[0, 1, 0], [255, 2, 2]])
    pred = np.array([[0, 1, 1], [2, 0, 2]])
    conf = CS.confusion_matrix(pred, truth, 3)
    assert conf.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]
    m, per_class = CS.mean_iou(conf)
    # IoU = TP / (TP + FP + FN): 1/3, 1/2, 1/2
    assert per_class == pytest.approx([100 / 3, 50.0, 50.0])
    assert m == pytest.approx((100 / 3 + 50 + 50) / 3)
    # A class in neither truth nor prediction has no IoU and is not averaged.
    m2, per2 = CS.mean_iou(np.array([[5, 0, 0], [0, 0, 0], [1, 0, 3]]))
    assert per2[1] is None
    assert m2 == pytest.approx((500 / 6 + 300 / 4) / 2)
    with pytest.raises(ValueError, match="outside"):
        CS.confusion_matrix(np.array([3]), np.array([0]), 3)


def test_segment_needs_an_output_folder(tmp_path):
    out = run_module("qbinfer", "segment", "m.qbw", "x.png")
    assert out.returncode == 2 and "-o/--output" in out.stderr


def test_segment_missing_model_is_a_clean_error(tmp_path):
    from PIL import Image

    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    out = run_module(
        "qbinfer", "segment", os.fspath(tmp_path / "none.qbw"), os.fspath(img), "-o", "d"
    )
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "qbinfer segment: error" in out.stderr and "none.qbw" in out.stderr


def test_segment_on_a_classifier_is_a_clean_error(tmp_path):
    pytest.importorskip("torch")  # the classifier is converted from PyTorch
    from conftest import convert_model, zoo_model
    from PIL import Image

    path, _ = convert_model(zoo_model("qb_net_small", seed=1), tmp_path, "cls", (32, 32))
    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(img)
    out = run_module("qbinfer", "segment", path, os.fspath(img), "-o", os.fspath(tmp_path / "o"))
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "not a segmentation model" in out.stderr


def test_demo_segmentation_option_errors():
    out = run_module("qbinfer", "demo", "--task", "segmentation", "--arch", "qb_net_small")
    assert out.returncode == 2 and "--task segmentation" in out.stderr
    out = run_module("qbinfer", "demo", "--task", "pose")
    assert out.returncode == 2 and "invalid choice" in out.stderr


def test_shipped_segmentation_files_load_without_torch():
    # The record and the held-out set the demo reads: numpy only.
    from qbinfer.demo import SHIPPED_SEGMENTER, shipped_record

    folder, record = shipped_record(SHIPPED_SEGMENTER)
    with np.load(os.path.join(folder, record["holdout"]), allow_pickle=False) as z:
        images, masks = z["images"], z["masks"]
    assert images.dtype == np.uint8 and images.shape[1:] == masks.shape[1:] + (3,)
    assert set(np.unique(masks).tolist()) <= set(range(len(record["classes"]))) | {255}
    assert record["miou_torch"] >= 0
    assert os.path.exists(os.path.join(folder, record["weights"]))


def test_demo_segmentation_end_to_end(tmp_path):
    from qbinfer.demo import SHIPPED_SEGMENTER, shipped_record

    folder, record = shipped_record(SHIPPED_SEGMENTER)
    if not os.path.exists(os.path.join(folder, record["model"])):
        pytest.skip(
            f"{record['model']} is not converted yet (needs the engine's dilated depthwise and "
            f"Resize ops): {record['convert_command']}"
        )
    overlay = os.fspath(tmp_path / "overlay.png")
    out = run_module("qbinfer", "demo", "--task", "segmentation", "--json", "--overlay", overlay)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    # The engine reproduces the trained model (the mIoU target of issue 18, >= 70, is the
    # training's to reach: docs/segmentation.md, "Results").
    assert abs(r["miou_engine"] - record["miou_torch"]) <= 0.5
    if r["miou_torch_source"] == "measured":
        assert abs(r["miou_engine"] - r["miou_torch"]) <= 0.5
        assert r["pixel_agreement"] >= 99.5
    assert os.path.getsize(overlay) > 0
