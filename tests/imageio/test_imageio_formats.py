"""One format sniffing (``monai_anon_app.imageio.formats``) for every kind of file, by content, and the three
places that ask it (image files, DICOM files, uploads) agreeing."""

from __future__ import annotations

import gzip
import io
import shutil
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from imageio_testlib import oblique_direction, smooth, write_slicer_nrrd, write_with_itk
from PIL import Image
from pydicom.filebase import DicomFileLike
from pydicom.filewriter import write_dataset

from monai_anon_app.data.cohort_writer import write_cohort
from monai_anon_app.data.phantoms import Cohort
from monai_anon_app.dicom.files import is_dicom
from monai_anon_app.imageio.formats import (
    FORMAT_SUFFIXES,
    PNG_MAGIC,
    format_from_name,
    nifti_suffix,
    sniff_bytes,
    sniff_format,
)
from monai_anon_app.imageio.images import image_format
from monai_anon_app.server.uploads import SUFFIX, upload_suffix

pytestmark = pytest.mark.filterwarnings("ignore:builtin type .* has no __module__:DeprecationWarning")  # ITK's SWIG


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> dict[str, tuple[Path, str | None]]:
    """One real file of every kind (name → (path, format))."""
    root = tmp_path_factory.mktemp("samples")
    pixels = smooth((24, 20), 0.0, 4000.0)
    out: dict[str, tuple[Path, str | None]] = {}

    Image.fromarray(pixels.astype(np.uint16)).save(root / "a.png")
    out["png"] = (root / "a.png", "png")
    for name in ("b.nii", "b.nii.gz"):
        nib.save(nib.Nifti1Image(pixels.T[:, :, None], np.eye(4)), str(root / name))
        out[name] = (root / name, "nifti")
    nib.save(nib.Nifti2Image(pixels.T[:, :, None], np.eye(4)), str(root / "n2.nii"))
    out["nifti2"] = (root / "n2.nii", "nifti")

    write_cohort(root / "cohort", Cohort(1, 1, seed=3), 32, "dicom", progress=False)
    dcm = next((root / "cohort").rglob("*.dcm"))
    out["dicom"] = (dcm, "dicom")
    ds = pydicom.dcmread(str(dcm))
    buffer = io.BytesIO()
    fp = DicomFileLike(buffer)
    fp.is_little_endian, fp.is_implicit_VR = True, ds.is_implicit_VR
    write_dataset(fp, ds)  # the data set alone: no preamble, no File Meta Information
    (root / "raw-dataset").write_bytes(buffer.getvalue())
    out["dicom without preamble"] = (root / "raw-dataset", "dicom")

    direction = oblique_direction()
    for name in ("c.nrrd", "nhdr/c.nhdr", "c.mha", "mhd/c.mhd"):  # detached: pixels in a c.raw beside each
        write_with_itk(root / name, pixels[None], (0.5, 0.7, 1.0), (1.0, 2.0, 3.0), direction)
    out["nrrd"] = (root / "c.nrrd", "nrrd")
    out["nrrd detached header"] = (root / "nhdr" / "c.nhdr", "nrrd")
    out["nrrd detached data"] = (root / "nhdr" / "c.raw", None)
    out["mha"] = (root / "c.mha", "mha")
    out["mhd detached header"] = (root / "mhd" / "c.mhd", "mha")
    out["slicer nrrd"] = (write_slicer_nrrd(root / "slicer.nrrd", pixels, (0.5, 0.7), (0, 0, 0), direction), "nrrd")
    out["2d mha"] = (write_with_itk(root / "d.mha", pixels, (0.5, 0.7), (0, 0), np.eye(2)), "mha")

    with zipfile.ZipFile(root / "e.zip", "w") as zf:
        zf.write(dcm, "x.dcm")
    out["zip"] = (root / "e.zip", "zip")
    zipfile.ZipFile(root / "empty.zip", "w").close()
    out["empty zip"] = (root / "empty.zip", "zip")

    (root / "notes.txt").write_text("patient: Jane Doe\nNDims: 3\n")
    out["text"] = (root / "notes.txt", None)
    (root / "keys.txt").write_text("Name = Jane Doe\nNDims = 2\n")  # key = value lines, but not MetaIO's first key
    out["key-value text"] = (root / "keys.txt", None)
    (root / "labels.csv").write_text("file,patient_id,finding\na.png,P1,normal\n")
    out["csv"] = (root / "labels.csv", None)
    (root / "blob.gz").write_bytes(gzip.compress(b"not a NIfTI header" * 40))
    out["gzip of something else"] = (root / "blob.gz", None)
    (root / "empty.bin").write_bytes(b"")
    out["empty"] = (root / "empty.bin", None)
    return out


def test_every_kind_is_told_by_its_content(samples, tmp_path):
    for name, (path, fmt) in samples.items():
        assert sniff_format(path) == fmt, name
        renamed = tmp_path / f"upload-{name.replace(' ', '-')}.bin"  # a name that says nothing
        shutil.copy(path, renamed)
        assert sniff_format(renamed) == fmt, name
        if fmt is not None:  # the server's uploads are saved under the suffix of their content
            assert upload_suffix(renamed, fmt) == (nifti_suffix(renamed) if fmt == "nifti" else SUFFIX[fmt]), name
        assert image_format(renamed) == (fmt if fmt != "zip" else None), name  # the command line's images
        assert is_dicom(renamed) == (fmt == "dicom"), name  # the DICOM commands


def test_truncated_files(samples, tmp_path):
    """A file cut inside its magic or header is no format; one cut after its header is still that format
    (its reader then says it is unreadable)."""
    for name in ("png", "b.nii", "nrrd", "mha", "dicom", "b.nii.gz"):
        path, fmt = samples[name]
        data = path.read_bytes()
        cut_head = tmp_path / f"head-{name}"
        cut_head.write_bytes(data[:6])
        assert sniff_format(cut_head) is None, name
        cut_body = tmp_path / f"body-{name}"
        cut_body.write_bytes(data[: max(len(data) // 2, 400)])
        assert sniff_format(cut_body) == fmt, name
    nifti = samples["b.nii"][0].read_bytes()
    assert sniff_bytes(nifti[:300]) is None  # the NIfTI magic lies at byte 344


def test_names_count_only_where_content_says_nothing(samples, tmp_path):
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"\x89PNG but not really")
    assert sniff_format(fake) is None and sniff_format(fake, names=True) == "png" and image_format(fake) == "png"
    junk = tmp_path / "x.dcm"
    junk.write_text("not dicom at all")
    assert sniff_format(junk) is None and is_dicom(junk)  # the server trusts content only
    disguised = tmp_path / "really-a-png.dcm"
    shutil.copy(samples["png"][0], disguised)
    assert sniff_format(disguised, names=True) == "png" and not is_dicom(disguised)  # content wins
    for name, fmt in (("a.NII.GZ", "nifti"), ("b.nhdr", "nrrd"), ("c.MHD", "mha"), ("d.dic", "dicom"),
                      ("e.txt", None), ("f.gz", None)):
        assert format_from_name(name) == fmt, name


def test_dicom_preamble_holding_a_png_or_zip_signature_is_dicom(samples, tmp_path):
    """The 128-byte preamble is free bytes: a DICOM file whose preamble starts with a PNG signature or a zip
    header is still DICOM (``DICM`` at byte 128 is tested first)."""
    data = samples["dicom"][0].read_bytes()
    assert data[128:132] == b"DICM"
    for name, magic in (("png", PNG_MAGIC), ("zip", b"PK\x03\x04"), ("empty zip", b"PK\x05\x06")):
        path = tmp_path / f"preamble-{name.replace(' ', '-')}.bin"
        path.write_bytes(magic + data[len(magic):])
        assert sniff_format(path) == "dicom" and image_format(path) == "dicom" and is_dicom(path), name
        assert pydicom.dcmread(str(path)).Rows == 32, name


def test_suffixes_name_new_files_by_the_first_of_each_format():
    assert {fmt: suffixes[0] for fmt, suffixes in FORMAT_SUFFIXES.items()} == {
        "png": ".png", "nifti": ".nii.gz", "dicom": ".dcm", "nrrd": ".nrrd", "mha": ".mha"}
    assert SUFFIX["nifti"] == ".nii.gz" and SUFFIX["zip"] == ".zip"  # the server's uploads
