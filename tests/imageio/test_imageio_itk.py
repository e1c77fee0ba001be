"""NRRD and MetaImage files through ITK: geometry read as ITK (and 3D Slicer, and MONAI's ITKReader) reads it,
results written back in the input's geometry with nothing else of its header, and DICOM geometry from GDCM."""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import numpy as np
import pydicom
import pytest
from imageio_testlib import (
    PHI_BYTES,
    PHI_NAME,
    geometry_of,
    itk,
    oblique_direction,
    plant_in_metaimage,
    ras_of_index,
    smooth,
    write_slicer_nrrd,
    write_with_itk,
)
from pydicom.filebase import DicomFileLike
from pydicom.filewriter import write_dataset

from monai_anon_app.data.cohort_writer import write_cohort
from monai_anon_app.data.phantoms import Cohort
from monai_anon_app.errors import InputError
from monai_anon_app.imageio.images import read_image, write_image
from monai_anon_app.imageio.itkio import read_header
from monai_anon_app.server.request_errors import RequestError
from monai_anon_app.server.uploads import load_input

pytestmark = pytest.mark.filterwarnings("ignore:builtin type .* has no __module__:DeprecationWarning")  # ITK's SWIG

SPACING3 = (0.6, 0.8, 2.5)  # i (columns), j (rows), k (the slice)
ORIGIN3 = (-12.5, 30.25, 7.0)
ROTATION_2D = np.array([[np.cos(0.3), -np.sin(0.3)], [np.sin(0.3), np.cos(0.3)]])


def _cases(root: Path) -> dict[str, tuple[Path, np.ndarray, tuple[int, int, int | None]]]:
    """name → (file, pixels (H, W) as the package should read them, ITK index axes of (column, row, slice))."""
    pixels = smooth((40, 56), -1000.0, 1500.0)
    direction = oblique_direction()
    cases = {}
    for suffix in (".nrrd", ".mha"):
        kind = suffix[1:]
        cases[f"{kind} single slice"] = (write_with_itk(root / f"slice{suffix}", pixels[None], SPACING3, ORIGIN3,
                                                        direction), pixels, (0, 1, 2))
        cases[f"{kind} 2d"] = (write_with_itk(root / f"flat{suffix}", pixels, SPACING3[:2], ORIGIN3[:2],
                                              ROTATION_2D), pixels, (0, 1, None))
        # a coronal slice stored with the middle axis of size 1: numpy (k, j, i) = (rows, 1, columns)
        cases[f"{kind} middle axis"] = (write_with_itk(root / f"coronal{suffix}", pixels[:, None, :], SPACING3,
                                                       ORIGIN3, direction), pixels, (0, 2, 1))
    plant_in_metaimage(cases["mha single slice"][0])
    slicer = write_slicer_nrrd(root / "slicer.nrrd", pixels, (SPACING3[1], SPACING3[0]), ORIGIN3, direction)
    cases["slicer nrrd"] = (slicer, np.rint(pixels).astype(np.float32), (0, 1, 2))
    return cases


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    return _cases(tmp_path_factory.mktemp("itk-cases"))


def _check_affine_maps_pixels(affine: np.ndarray, image, shape: tuple[int, int], axes) -> None:
    """``affine @ (column, row, 0)`` is the RAS point ITK gives that pixel, at the corners and inside."""
    rows, cols = shape
    col_axis, row_axis, slice_axis = axes
    for r, c in itertools.product((0, 7, rows - 1), (0, 11, cols - 1)):
        index = [0] * (3 if slice_axis is not None else 2)
        index[col_axis], index[row_axis] = c, r
        np.testing.assert_allclose((affine @ [c, r, 0, 1])[:3], ras_of_index(image, tuple(index)), atol=1e-6)


def test_files_read_with_the_geometry_itk_gives_them(cases):
    itk_ = itk()
    for name, (path, pixels, axes) in cases.items():
        image = read_image(path)
        assert image.format == path.suffix[1:], name
        np.testing.assert_array_equal(image.pixels, pixels, err_msg=name)
        reference = itk_.imread(str(path))
        _check_affine_maps_pixels(image.affine, reference, pixels.shape, axes)
        spacing = np.array(reference.GetSpacing())
        assert image.spacing == pytest.approx((spacing[axes[1]], spacing[axes[0]])), name
    assert read_image(cases["slicer nrrd"][0]).meta["dtype"] == "int16"


def test_affine_is_monais_itk_reader_affine(cases):
    """MONAI's ``LoadImage`` with its ITK reader (RAS, as MONAI Label and the bundles load files) agrees."""
    from monai.data import ITKReader
    from monai.transforms import LoadImage

    load = LoadImage(reader=ITKReader(), image_only=True)
    for name in ("nrrd single slice", "mha single slice", "slicer nrrd"):
        path, pixels, _ = cases[name]
        loaded = load(str(path))
        assert tuple(loaded.shape) == (pixels.shape[1], pixels.shape[0], 1), name
        np.testing.assert_allclose(read_image(path).affine, np.asarray(loaded.affine), atol=1e-6, err_msg=name)
        np.testing.assert_allclose(np.asarray(loaded)[:, :, 0].T, pixels, err_msg=name)


def test_results_keep_the_geometry_and_nothing_else_of_the_header(cases, tmp_path):
    itk_ = itk()
    for name, (path, _, _) in cases.items():
        assert any(phi in path.read_bytes() for phi in PHI_BYTES), f"{name}: nothing planted"
        if name.endswith("single slice"):  # ITK itself reads the planted field: a copied dictionary would carry it
            planted = itk_.imread(str(path))  # kept: the dictionary lives inside the image
            assert planted.GetMetaDataDictionary()["PatientName"] == PHI_NAME
        like = read_image(path)
        out = tmp_path / f"{name.replace(' ', '-')}{path.suffix}"
        result = like.pixels * 0.5 + 3.0
        write_image(out, result, like)
        data = out.read_bytes()
        assert not [phi for phi in PHI_BYTES if phi in data], name
        assert b"Comment" not in data and b"content:" not in data and b"Name =" not in data, name
        written, original = itk_.imread(str(out)), itk_.imread(str(path))
        for got, want in zip(geometry_of(written), geometry_of(original)):
            np.testing.assert_allclose(got, want, atol=1e-9, err_msg=name)
        assert np.asarray(itk_.array_from_image(written)).dtype == np.float32
        np.testing.assert_array_equal(read_image(out).pixels, result.astype(np.float32), err_msg=name)
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".partial-")]


def test_detached_headers_are_read_and_written_as_one_file(tmp_path):
    itk_ = itk()
    pixels = smooth((24, 32), 0.0, 900.0)
    for suffix in (".nhdr", ".mhd"):
        src = write_with_itk(tmp_path / suffix[1:] / f"in{suffix}", pixels[None], SPACING3, ORIGIN3,
                             oblique_direction())
        assert (src.parent / "in.raw").is_file()  # ITK put the pixels beside the header
        like = read_image(src)
        np.testing.assert_array_equal(like.pixels, pixels)
        out = tmp_path / "out" / f"result{suffix}"
        write_image(out, like.pixels + 1, like)
        assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no second file to lose or leak
        np.testing.assert_array_equal(read_image(out).pixels, pixels + 1)
        for got, want in zip(geometry_of(itk_.imread(str(out))), geometry_of(itk_.imread(str(src)))):
            np.testing.assert_allclose(got, want, atol=1e-9)
        out.unlink()


def test_images_the_model_cannot_take_are_refused_with_a_reason(tmp_path):
    itk_ = itk()
    rgb = itk_.image_from_array(np.zeros((16, 16, 3), np.uint8), is_vector=True)
    itk_.imwrite(rgb, str(tmp_path / "rgb.nrrd"))
    write_with_itk(tmp_path / "volume.mha", np.zeros((8, 16, 16), np.float32), SPACING3, ORIGIN3, np.eye(3))
    write_with_itk(tmp_path / "series.nrrd", np.zeros((2, 3, 16, 16), np.float32), (1, 1, 1, 1), (0, 0, 0, 0),
                   np.eye(4), planted=False)
    good = write_with_itk(tmp_path / "good.nrrd", smooth((16, 16), 0, 1)[None], SPACING3, ORIGIN3, np.eye(3))
    (tmp_path / "cut.nrrd").write_bytes(good.read_bytes()[:-200])
    (tmp_path / "header.nrrd").write_bytes(b"NRRD0004\ntype: float\nsizes: nonsense\n\n")
    nan = smooth((16, 16), 0, 1)
    nan[2, 2] = np.nan
    write_with_itk(tmp_path / "nan.mha", nan[None], SPACING3, ORIGIN3, np.eye(3))
    for name, words in (("rgb.nrrd", "3 components per pixel"), ("volume.mha", "only 2D images"),
                        ("series.nrrd", "4 dimensions"), ("cut.nrrd", "not a readable NRRD image"),
                        ("header.nrrd", "not a readable NRRD image"), ("nan.mha", "NaN")):
        with pytest.raises(InputError) as e:
            read_image(tmp_path / name)
        assert words in str(e.value) and str(tmp_path) not in str(e.value), (name, str(e.value))


def _dicom(root: Path) -> Path:
    write_cohort(root / "cohort", Cohort(1, 1, seed=5), 48, "dicom", progress=False)
    return next((root / "cohort").rglob("*.dcm"))


def test_dicom_geometry_is_gdcms(tmp_path):
    """An upload's DICOM geometry is what ITK/GDCM (3D Slicer's reader) derive: position, orientation, and
    Imager Pixel Spacing first for a DX image; GDCM reads it from a data set without its Part 10 header too."""
    itk_ = itk()
    ds = pydicom.dcmread(str(_dicom(tmp_path)))
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [12.5, -30.0, 4.0], [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
    ds.ImagerPixelSpacing, ds.PixelSpacing = [0.8, 0.6], [0.7, 0.5]
    oblique = tmp_path / "oblique.dcm"
    ds.save_as(str(oblique))
    buffer = io.BytesIO()
    fp = DicomFileLike(buffer)
    fp.is_little_endian, fp.is_implicit_VR = True, ds.is_implicit_VR
    write_dataset(fp, ds)
    raw = tmp_path / "raw-dataset"
    raw.write_bytes(buffer.getvalue())
    source = load_input(oblique, 8192, scratch=tmp_path)
    assert source.image.pixels.shape == (48, 48)
    _check_affine_maps_pixels(source.affine, itk_.imread(str(oblique)), (48, 48), (0, 1, 2))
    # the same as reading Image Position/Orientation (Patient) and Imager Pixel Spacing by hand
    np.testing.assert_allclose(source.affine[:3, 3], [-12.5, 30.0, 4.0], atol=1e-6)
    np.testing.assert_allclose(source.affine[:3, 0], [0, -0.6, 0], atol=1e-6)  # along a row: +y (LPS)
    np.testing.assert_allclose(source.affine[:3, 1], [0, 0, -0.8], atol=1e-6)  # down a column: -z
    np.testing.assert_allclose(read_header(raw, "dicom").geometry.ras_affine(), source.affine, atol=1e-9)


def test_uploads_of_nrrd_and_metaimage_carry_their_geometry(cases, tmp_path):
    """The server's reader takes NRRD and MetaImage files whatever their name, with the geometry ITK gives."""
    itk_ = itk()
    for name in ("slicer nrrd", "mha single slice", "nrrd middle axis"):
        path, pixels, axes = cases[name]
        upload = tmp_path / "upload"
        upload.write_bytes(path.read_bytes())
        source = load_input(upload, 8192, scratch=tmp_path, name="scan")
        np.testing.assert_array_equal(source.image.pixels, pixels)
        _check_affine_maps_pixels(source.affine, itk_.imread(str(path)), pixels.shape, axes)
    with pytest.raises(RequestError) as e:
        load_input(cases["slicer nrrd"][0], 32, name="scan.nrrd")
    assert e.value.status == 413 and "40×56" in e.value.message
