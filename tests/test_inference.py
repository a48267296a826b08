"""A trained model applied to images: probabilities, the 10-crop test, and image files read as the model's input."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import minigrad as mg
from alexnet import data
from alexnet.evaluate import predict_logits, ten_crop_notes
from alexnet.inference import probabilities, read_image
from alexnet.model import build_model


@pytest.fixture(scope="module")
def tiny():
    mg.manual_seed(0)
    return build_model("alexnet-tiny", width=0.25).eval()


def test_probabilities_are_the_softmax_of_the_logits(tiny):
    images = np.random.default_rng(0).integers(0, 256, (5, 1, 28, 28), dtype=np.uint8)
    mean, std = np.array([0.3], np.float32), np.array([0.3], np.float32)
    probs = probabilities(tiny, images, mean, std, batch_size=2)
    logits = predict_logits(tiny, images, mean=mean, std=std).astype(np.float64)
    by_hand = np.exp(logits - logits.max(axis=1, keepdims=True))
    by_hand /= by_hand.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probs, by_hand, rtol=1e-5, atol=1e-7)  # float32 softmax
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)


def test_ten_crop_on_input_size_images_is_the_average_of_all_ten_crops(tiny):
    """Only 2 of the 10 crops differ (image and mirror): computing those 2 gives the paper's 10-crop average."""
    images = np.random.default_rng(1).integers(0, 256, (3, 1, 28, 28), dtype=np.uint8)
    logp = predict_logits(tiny, images, ten_crop=True)
    crops = data.ten_crop(data.to_unit_float(images), 28)  # (10, 3, 1, 28, 28)
    with mg.no_grad():
        probs = [mg.functional.softmax(tiny(mg.tensor(np.ascontiguousarray(c))), axis=1).numpy() for c in crops]
    np.testing.assert_allclose(np.exp(logp), np.mean(probs, axis=0), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(("height", "width", "views"), [(28, 28, 2), (28, 40, 6), (32, 40, 10), (256, 256, 10)])
def test_distinct_ten_crop_views(height, width, views):
    assert data.distinct_ten_crop_views(height, width, 28 if height < 200 else 227) == views
    notes = ten_crop_notes((height, width), 28 if height < 200 else 227, trained_with_flips=True)
    assert (len(notes) == 1) == (views < 10)


def test_ten_crop_positions_are_the_corners_then_the_centre():
    assert data.ten_crop_positions(32, 40, 28) == [(0, 0), (0, 12), (4, 0), (4, 12), (2, 6)]


def test_a_grey_image_of_the_input_size_is_read_as_it_is(tiny, tmp_path):
    pixels = np.random.default_rng(2).integers(0, 100, (28, 28), dtype=np.uint8)  # dark, like Fashion-MNIST
    Image.fromarray(pixels).save(tmp_path / "x.png")
    read = read_image(tiny, tmp_path / "x.png")
    np.testing.assert_array_equal(read.pixels, pixels[None])
    assert read.notes == []


def test_a_wide_image_keeps_its_aspect_ratio_on_black(tiny, tmp_path):
    Image.fromarray(np.full((10, 40), 200, np.uint8)).save(tmp_path / "wide.png")
    read = read_image(tiny, tmp_path / "wide.png", invert=True)
    assert read.pixels.shape == (1, 28, 28)
    rows = np.flatnonzero(read.pixels[0].max(axis=1))
    assert len(rows) == 7 and read.pixels[0, rows].min() == 55  # 10x40 -> 7x28, inverted 200 -> 55, centred
    assert read.pixels[0, : rows[0]].max() == 0 and read.pixels[0, rows[-1] + 1 :].max() == 0
    assert read.notes == [
        "inverted (--invert): dark on light became light on dark",
        "resized from 40x10 to 28x7 (aspect ratio kept) and centred on a black 28x28 square",
    ]


def test_a_colour_model_notes_the_papers_crop_and_a_grey_file(tmp_path):
    small = build_model("alexnet-small", width=0.25)
    Image.fromarray(np.zeros((50, 100), np.uint8)).save(tmp_path / "grey.png")
    read = read_image(small, tmp_path / "grey.png")
    assert read.pixels.shape == (3, 64, 64)
    assert read.notes == [
        "a grey image: given three equal colour channels",
        "100x50: shorter side scaled to 73 and the centre 73x73 kept (the paper's way: the ends of the longer side "
        "are cut), then the centre 64x64 crop",
    ]
