"""Real NRRD and MetaImage files for the image I/O tests: written with ITK, or by hand the way 3D Slicer writes
a 2D image (a single-slice volume), each with a patient name planted in its header."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from peers import require_module

#: the patient name planted in input headers: no output may carry it
PHI_NAME = "DOE^JANE"
PHI_TEXT = "Jane Doe MRN 0042"
PHI_BYTES = (PHI_NAME.encode(), b"Jane Doe", b"MRN 0042")


def itk():
    """The ``itk`` module (a skip locally without it; a failure under CI)."""
    return require_module("itk", "pip install -e . (itk is a dependency)")


def smooth(shape: tuple[int, int], lo: float, hi: float, seed: int = 0) -> np.ndarray:
    """A smooth ``(H, W)`` float32 image spanning about ``lo``..``hi``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    img = np.sin(xx / 6.0) * np.cos(yy / 9.0) + np.exp(-((xx - shape[1] / 2) ** 2 + (yy - shape[0] / 3) ** 2) / 150.0)
    img += 0.05 * rng.standard_normal(shape)
    img = (img - img.min()) / (img.max() - img.min())
    return (lo + img * (hi - lo)).astype(np.float32)


def oblique_direction() -> np.ndarray:
    """A rotation (columns: the LPS directions of index axes i, j, k): 25° about z, then 10° about x."""
    a, b = np.deg2rad(25.0), np.deg2rad(10.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(b), -np.sin(b)], [0.0, np.sin(b), np.cos(b)]])
    return rx @ rz


def write_with_itk(path: Path, array: np.ndarray, spacing, origin, direction, planted: bool = True) -> Path:
    """``array`` (ITK's numpy order: ``(k, j, i)`` or ``(j, i)``) written by ITK with the given geometry and,
    with ``planted``, the patient name in the image's metadata dictionary (NRRD: a ``key:=value`` line;
    MetaImage: an extra header field)."""
    itk_ = itk()
    image = itk_.image_from_array(np.ascontiguousarray(array))
    image.SetSpacing([float(v) for v in spacing])
    image.SetOrigin([float(v) for v in origin])
    image.SetDirection(itk_.matrix_from_array(np.ascontiguousarray(direction, dtype=np.float64)))
    if planted:
        image.GetMetaDataDictionary()["PatientName"] = PHI_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    itk_.imwrite(image, str(path))
    return path


def write_slicer_nrrd(path: Path, pixels: np.ndarray, spacing: tuple[float, float], origin, direction) -> Path:
    """A 2D image as 3D Slicer saves one: a gzip-encoded NRRD volume of one slice (sizes W H 1) in LPS,
    with free text planted where NRRD allows it (a comment, the ``content`` field, key/value pairs).
    ``pixels (H, W)`` are stored as int16; ``spacing`` is (row, column) mm; ``direction`` columns i, j, k."""
    rows, cols = pixels.shape
    d = np.asarray(direction, dtype=np.float64)
    vectors = [d[:, 0] * spacing[1], d[:, 1] * spacing[0], d[:, 2] * 1.0]
    fmt = " ".join("(" + ",".join(f"{v:.17g}" for v in vec) + ")" for vec in vectors)
    header = (
        "NRRD0004\n"
        "# Complete NRRD file format specification at:\n"
        f"# patient {PHI_TEXT}\n"
        f"content: {PHI_TEXT}\n"
        "type: short\n"
        "dimension: 3\n"
        "space: left-posterior-superior\n"
        f"sizes: {cols} {rows} 1\n"
        f"space directions: {fmt}\n"
        "kinds: domain domain domain\n"
        "endian: little\n"
        "encoding: gzip\n"
        f"space origin: ({','.join(f'{float(v):.17g}' for v in origin)})\n"
        f"PatientName:={PHI_NAME}\n"
        f"DICOM_0010_0010:={PHI_TEXT}\n"
        "\n"
    )
    data = np.ascontiguousarray(np.rint(pixels).astype("<i2")).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header.encode() + gzip.compress(data))
    return path


def plant_in_metaimage(path: Path) -> Path:
    """Add MetaIO's own free-text fields (``Name``, ``Comment``) to the header of the MetaImage file ``path``."""
    data = path.read_bytes()
    first = data.index(b"\n") + 1
    path.write_bytes(data[:first] + f"Name = {PHI_NAME}\nComment = {PHI_TEXT}\n".encode() + data[first:])
    return path


def ras_of_index(image, index: tuple[int, ...]) -> np.ndarray:
    """The RAS point of the ITK image's pixel ``index`` (ITK's own LPS physical point, flipped)."""
    lps = np.array(image.TransformIndexToPhysicalPoint([int(v) for v in index]), dtype=np.float64)
    lps3 = np.zeros(3)
    lps3[:len(lps)] = lps
    return lps3 * np.array([-1.0, -1.0, 1.0])


def geometry_of(image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(origin, spacing, direction) of an ITK image, as arrays."""
    itk_ = itk()
    return (np.array(image.GetOrigin(), dtype=np.float64), np.array(image.GetSpacing(), dtype=np.float64),
            itk_.array_from_matrix(image.GetDirection()).astype(np.float64))
