"""NRRD and MetaImage uploads through the real server: the result is a NIfTI that ITK (3D Slicer's reader)
places exactly where the input lies, with the model's pixels in the input's orientation and no header text."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from imageio_testlib import (
    PHI_BYTES,
    geometry_of,
    itk,
    oblique_direction,
    plant_in_metaimage,
    ras_of_index,
    smooth,
    write_slicer_nrrd,
    write_with_itk,
)

from monai_anon_app.imageio.images import read_image
from monai_anon_app.inference import Anonymizer

pytestmark = pytest.mark.filterwarnings("ignore:builtin type .* has no __module__:DeprecationWarning")  # ITK's SWIG


def test_nrrd_and_metaimage_uploads_come_back_in_their_geometry(server, tiny_model, tmp_path):
    itk_ = itk()
    direction = oblique_direction()
    sources = {
        "slicer.nrrd": write_slicer_nrrd(tmp_path / "slicer.nrrd", smooth((48, 40), -800.0, 1200.0), (0.7, 0.5),
                                         (-10.0, 20.0, 5.0), direction),
        "slice.mha": plant_in_metaimage(write_with_itk(tmp_path / "slice.mha", smooth((36, 44), 0, 3000, 1)[None],
                                                       (0.4, 0.6, 1.0), (3.0, -4.0, 8.0), direction)),
        "flat.nrrd": write_with_itk(tmp_path / "flat.nrrd", smooth((40, 40), 0, 1, 2), (0.3, 0.9), (1.5, 2.5),
                                    np.array([[0.0, -1.0], [1.0, 0.0]])),
    }
    model = Anonymizer.load(tiny_model)
    for name, src in sources.items():
        r = server.post("/infer/anonymize?output=image", data={"params": json.dumps({"seed": 11, "mode": "full"})},
                        files={"file": (name, src.read_bytes(), "application/octet-stream")})
        assert r.status_code == 200, r.text
        out = tmp_path / f"result-{name}.nii"
        out.write_bytes(r.content)
        assert not [phi for phi in PHI_BYTES if phi in r.content], name
        result, original = itk_.imread(str(out)), itk_.imread(str(src))
        if original.GetImageDimension() == 3:  # a single-slice volume: the very same geometry
            for got, want in zip(geometry_of(result), geometry_of(original)):
                np.testing.assert_allclose(got, want, atol=1e-5, err_msg=name)
        pixels = read_image(src).pixels
        rows, cols = pixels.shape
        for r_, c in itertools.product((0, rows // 2, rows - 1), (0, 5, cols - 1)):
            index = (c, r_) if original.GetImageDimension() == 2 else (c, r_, 0)
            np.testing.assert_allclose(ras_of_index(result, (c, r_, 0)), ras_of_index(original, index), atol=1e-4)
        got = np.asarray(itk_.array_from_image(result), dtype=np.float32).reshape(rows, cols)
        expected = model.anonymize(pixels, seed=11, mode="full").image
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * float(np.ptp(pixels)), err_msg=name)
