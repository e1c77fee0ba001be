"""Reading and writing 2D images (PNG, NIfTI, NRRD, MetaImage) with their geometry and intensity scale kept.

An :class:`Image2D` carries a ``(H, W)`` float32 pixel array plus whatever is needed to write a result
back in the input's format, geometry and intensity scale: the PNG bit depth, the NIfTI affine and
header, or the ITK geometry of an NRRD or MetaImage file (read and written with ITK,
:mod:`~monai_anon_app.imageio.itkio`). The format is sniffed from the content
(:mod:`~monai_anon_app.imageio.formats`). DICOM lives in :mod:`monai_anon_app.dicom`.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from PIL import Image, UnidentifiedImageError

from monai_anon_app.errors import InputError
from monai_anon_app.imageio.formats import FORMAT_NAMES, IMAGE_FORMATS, IMAGE_KINDS, sniff_format
from monai_anon_app.imageio.geometry import plane_affine
from monai_anon_app.imageio.itkio import WRITE_SUFFIX, read_header, read_pixels, write_volume
from monai_anon_app.imageio.metadata import clean_nifti_header, save_png

__all__ = [
    "PARTIAL_PREFIX",
    "Image2D",
    "atomic_write",
    "image_format",
    "new_nifti",
    "read_image",
    "validate_pixels",
    "write_image",
]

#: the name prefix of a file being written (renamed into place when complete)
PARTIAL_PREFIX = ".partial-"


def image_format(path: str | os.PathLike) -> str | None:
    """``"png"``, ``"nifti"``, ``"dicom"``, ``"nrrd"``, ``"mha"`` or ``None`` (not an image): the sniffed content,
    else what the name claims (:func:`~monai_anon_app.imageio.formats.sniff_format` with ``names``)."""
    fmt = sniff_format(path, names=True)
    return fmt if fmt in IMAGE_FORMATS else None


@dataclass
class Image2D:
    """A 2D image: ``pixels (H, W) float32`` in the file's own units, and how to write it back."""

    pixels: np.ndarray
    format: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def spacing(self) -> tuple[float, float]:
        return tuple(self.meta.get("spacing", (1.0, 1.0)))  # type: ignore[return-value]

    @property
    def affine(self) -> np.ndarray:
        """The NIfTI (RAS) affine of the voxel axes ``(column, row, slice)``: the file's own (NIfTI; NRRD and
        MetaImage through ITK), else origin 0 and identity direction at :attr:`spacing` (PNG)."""
        if "affine" in self.meta:
            return np.asarray(self.meta["affine"], dtype=np.float64)
        return plane_affine(self.spacing)


def validate_pixels(pixels: np.ndarray, name: str = "image") -> np.ndarray:
    """Check that ``pixels`` is a finite 2D image (a single-slice volume is squeezed); return float32."""
    arr = np.asarray(pixels)
    if arr.ndim == 3 and 1 in arr.shape:
        arr = arr.squeeze(axis=arr.shape.index(1))
    if arr.ndim != 2:
        raise InputError(f"{name} has shape {tuple(np.shape(pixels))}; only 2D images or single-slice volumes "
                         "are supported")
    if min(arr.shape) < 8:
        raise InputError(f"{name} is only {arr.shape[0]}×{arr.shape[1]} pixels; at least 8×8 is needed")
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise InputError(f"{name} has non-numeric pixel type {arr.dtype}")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise InputError(f"{name} contains NaN or infinite pixel values; fix or mask them first")
    return arr


def read_image(path: str | os.PathLike) -> Image2D:
    """Read a PNG, NIfTI, NRRD or MetaImage image as an :class:`Image2D`; raise :class:`InputError` with a
    reason."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist or is not a file")
    fmt = image_format(path)
    if fmt == "png":
        return _read_png(path)
    if fmt == "nifti":
        return _read_nifti(path)
    if fmt in WRITE_SUFFIX:
        return _read_itk(path, fmt)
    if fmt == "dicom":
        raise InputError(f"{path.name} is DICOM; read it with monai_anon_app.dicom")
    raise InputError(f"{path.name} is not a {IMAGE_KINDS} image")


def _read_png(path: Path) -> Image2D:
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode in ("RGB", "RGBA", "P", "LA"):
                raise InputError(f"{path.name} is a colour PNG ({mode}); only greyscale radiographs are supported")
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise InputError(f"{path.name} is not a readable PNG image ({exc.__class__.__name__})") from None
    if mode == "1":
        arr = arr.astype(np.uint8) * 255
    dtype = "uint8" if arr.dtype == np.uint8 else "uint16"
    return Image2D(validate_pixels(arr, path.name), "png", {"dtype": dtype})


def _read_nifti(path: Path) -> Image2D:
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise InputError(f"{path.name} is not a readable NIfTI image ({exc.__class__.__name__})") from None
    shape = data.shape
    if data.ndim == 3 and shape[2] == 1:
        data = data[:, :, 0]
    elif data.ndim != 2:
        raise InputError(f"{path.name} has shape {shape}; only 2D images or single-slice volumes are supported")
    # NIfTI stores (i, j) = (column, row): transpose to the (row, column) order used everywhere else
    zooms = img.header.get_zooms()
    meta = {"affine": img.affine.copy(), "header": img.header.copy(), "shape": shape,
            "spacing": (float(zooms[1]), float(zooms[0])), "dtype": str(data.dtype)}
    return Image2D(validate_pixels(data.T, path.name), "nifti", meta)


def _read_itk(path: Path, fmt: str) -> Image2D:
    """An NRRD or MetaImage file (attached or detached data: the server refuses detached headers before this,
    :func:`~monai_anon_app.imageio.itkio.detached_data_file`) through ITK: a 2D image or a single-slice volume
    of one greyscale component."""
    what = FORMAT_NAMES[fmt]
    try:
        header = read_header(path, fmt)
    except RuntimeError:  # ITK's messages name server paths: the class is enough
        raise InputError(f"{path.name} is not a readable {what} image (its header cannot be read)") from None
    geometry = header.geometry
    if header.components != 1:
        raise InputError(f"{path.name} has {header.components} components per pixel (a colour or vector image); "
                         "only greyscale is supported")
    if geometry.dimension not in (2, 3):
        raise InputError(f"{path.name} has {geometry.dimension} dimensions {geometry.size}; only 2D images or "
                         "single-slice volumes are supported")
    if geometry.dimension == 3 and 1 not in geometry.size:  # refused before its pixels are decoded
        raise InputError(f"{path.name} has shape {geometry.size}; only 2D images or single-slice volumes are "
                         "supported")
    try:
        data = read_pixels(path, fmt, geometry.dimension)
    except RuntimeError:
        raise InputError(f"{path.name} is not a readable {what} image (its pixel data cannot be read)") from None
    meta = {"affine": geometry.ras_affine(), "geometry": geometry, "shape": data.shape,
            "spacing": geometry.pixel_spacing(), "dtype": header.dtype}
    return Image2D(validate_pixels(data, path.name), fmt, meta)


def atomic_write(path: str | os.PathLike, write, suffix: str | None = None) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``: a failure leaves no partial file. The temporary
    file ends in ``suffix`` (default: ``path``'s suffixes), for writers that choose their format by name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=PARTIAL_PREFIX, suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would surprise; follow the user's umask
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def new_nifti(pixels: np.ndarray, spacing: tuple[float, float]) -> Image2D:
    """An :class:`Image2D` template for writing ``pixels (H, W)`` as a fresh 2D NIfTI with ``spacing`` (mm)."""

    affine = np.diag([-spacing[1], -spacing[0], 1.0, 1.0])  # rows run head to feet, columns right to left
    header = clean_nifti_header()
    header.set_xyzt_units("mm")
    shape = (pixels.shape[1], pixels.shape[0], 1)
    return Image2D(np.asarray(pixels, np.float32), "nifti",
                   {"affine": affine, "header": header, "shape": shape, "spacing": spacing})


def write_image(path: str | os.PathLike, pixels: np.ndarray, like: Image2D) -> None:
    """Write ``pixels (H, W)`` in ``like``'s format, geometry and intensity type (float32 for NIfTI, NRRD and
    MetaImage), atomically; no free text of ``like``'s file comes along (:mod:`~monai_anon_app.imageio.metadata`,
    :func:`~monai_anon_app.imageio.itkio.write_volume`). NRRD and MetaImage files hold their pixels, whatever
    the name (a ``.nhdr`` or ``.mhd`` name too)."""
    pixels = np.asarray(pixels, dtype=np.float32)
    if pixels.shape != like.pixels.shape:
        raise ValueError(f"result shape {pixels.shape} differs from the input's {like.pixels.shape}")
    if like.format == "png":
        info = np.iinfo(like.meta.get("dtype", "uint8"))
        arr = np.clip(np.rint(pixels), info.min, info.max).astype(info.dtype)
        atomic_write(path, lambda tmp: save_png(tmp, arr))
    elif like.format == "nifti":
        header = clean_nifti_header(like.meta["header"])
        header.set_data_dtype(np.float32)
        header["scl_slope"], header["scl_inter"] = 1.0, 0.0
        data = pixels.T.reshape(like.meta["shape"])
        img = nib.Nifti1Image(data, like.meta["affine"], header)
        atomic_write(path, lambda tmp: nib.save(img, tmp))
    elif like.format in WRITE_SUFFIX:  # float32 in the input's ITK geometry; nothing else of its header
        data = pixels.reshape(like.meta["shape"])
        fmt, geometry = like.format, like.meta["geometry"]
        atomic_write(path, lambda tmp: write_volume(tmp, data, geometry, fmt), suffix=WRITE_SUFFIX[fmt])
    else:
        raise InputError(f"cannot write format {like.format!r} here")
