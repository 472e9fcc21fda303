"""ZIPs of images with labels.csv: decoded to the model's [C, H, W] float32 in [0, 1]."""

from __future__ import annotations

import numpy as np
import pytest

from service.calibration import images
from service.calibration.loader import load_calibration
from service.errors import InvalidCalibrationSet
from tests.service.calibration.builders import (
    image_model,
    png_bytes,
    tabular_model,
    zip_bytes,
)

LABELS = "file,label,site\nimg/0.png,circle,a\nimg/1.png,square,b\nimg/2.png,triangle,a\n"


def _pixels(seed: int, size: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def _members(labels: str = LABELS, size: int = 8) -> dict[str, bytes]:
    members = {"labels.csv": labels.encode()}
    members.update({f"img/{i}.png": png_bytes(_pixels(i, size)) for i in range(3)})
    return members


def _load(members: dict[str, bytes], model=None):
    model = model or image_model()
    return load_calibration(zip_bytes(members), model, "label", ["site"], 100, "set.zip")


def test_images_become_chw_floats_in_unit_range_in_labels_order() -> None:
    cal = _load(_members())
    assert cal.format == "zip"
    assert cal.x.shape == (3, 3, 8, 8)
    assert cal.x.dtype == np.float32
    for i in range(3):
        np.testing.assert_allclose(cal.x[i], _pixels(i).transpose(2, 0, 1) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(cal.y, [0, 1, 2])
    assert cal.bias["site"].tolist() == ["a", "b", "a"]


def test_images_are_resized_to_the_model_input() -> None:
    members = _members()
    members["img/1.png"] = png_bytes(np.full((32, 20, 3), 255, dtype=np.uint8))
    cal = _load(members)
    np.testing.assert_allclose(cal.x[1], 1.0)


def test_grey_models_get_one_channel() -> None:
    cal = _load(_members(), model=image_model(channels=1))
    assert cal.x.shape == (3, 1, 8, 8)


def test_model_that_is_not_an_image_model_is_refused() -> None:
    with pytest.raises(InvalidCalibrationSet, match=r"input shape \[7\], not an image"):
        load_calibration(zip_bytes(_members()), tabular_model(), "label", ["site"], 100)


def test_archive_without_labels_csv_is_refused() -> None:
    members = _members()
    del members["labels.csv"]
    with pytest.raises(InvalidCalibrationSet, match=r"needs labels.csv at its root"):
        _load(members)


def test_extra_labels_column_is_named() -> None:
    labels = "file,label,site,notes\n" + "".join(line + ",x\n" for line in LABELS.splitlines()[1:])
    with pytest.raises(InvalidCalibrationSet, match=r"labels.csv.*extra \['notes'\]"):
        _load(_members(labels))


def test_corrupt_image_is_named() -> None:
    members = _members()
    members["img/2.png"] = members["img/2.png"][:40]
    with pytest.raises(InvalidCalibrationSet, match=r"'img/2.png' cannot be decoded"):
        _load(members)


def test_listed_file_missing_from_the_archive_is_named() -> None:
    members = _members()
    del members["img/1.png"]
    with pytest.raises(InvalidCalibrationSet, match=r"not in the archive: \['img/1.png'\]"):
        _load(members)


def test_unlisted_images_are_named() -> None:
    members = _members()
    members["img/stray.png"] = png_bytes(_pixels(9))
    members["README.txt"] = b"not an image, ignored"
    with pytest.raises(InvalidCalibrationSet, match=r"1 images.*not listed.*\['img/stray.png'\]"):
        _load(members)


def test_member_inflating_past_the_bound_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "MAX_IMAGE_BYTES", 1000)
    members = _members()
    members["img/0.png"] = png_bytes(_pixels(0, size=64))
    with pytest.raises(InvalidCalibrationSet, match=r"'img/0.png' would inflate to .* bytes"):
        _load(members)
