"""Where an image lies in patient space, as ITK (and so 3D Slicer) describes it, and the NIfTI affine of that.

A :class:`Geometry` is ITK's: per index axis ``(i, j[, k])`` a size and a spacing, the origin (the centre of
the first pixel) and the direction cosines, all in LPS millimetres. The package works on 2D images of
``(row, column)`` pixels: a 2D image's columns run along ``i`` and its rows along ``j``; a single-slice
volume (a 2D image as 3D Slicer saves it) has one axis of size 1, the slice, and its other two axes, in
index order, are the columns and the rows. :meth:`Geometry.ras_affine` gives the NIfTI (RAS) affine for
the voxel axes ``(column, row, slice)``, which is what MONAI's ``ITKReader`` gives too (``affine_lps_to_ras``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["LPS_TO_RAS", "Geometry", "plane_affine"]

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class Geometry:
    """ITK geometry: ``size``, ``spacing`` and ``origin`` per index axis, ``direction`` a ``(D, D)`` matrix
    whose column ``a`` is the LPS direction of index axis ``a``."""

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: np.ndarray

    @property
    def dimension(self) -> int:
        return len(self.size)

    def plane_axes(self) -> tuple[int, int, int | None]:
        """The index axes of the columns, the rows and the slice (``None`` for a 2D image); for a volume
        without an axis of size 1: ``(0, 1, 2)``."""
        if self.dimension == 2:
            return 0, 1, None
        singles = [a for a in range(3) if self.size[a] == 1]
        if not singles:
            return 0, 1, 2
        col, row = (a for a in range(3) if a != singles[-1])
        return col, row, singles[-1]

    def plane_shape(self) -> tuple[int, int]:
        """``(rows, columns)`` of the 2D image."""
        col, row, _ = self.plane_axes()
        return int(self.size[row]), int(self.size[col])

    def pixel_spacing(self) -> tuple[float, float]:
        """``(row, column)`` spacing in mm, the order of DICOM's Pixel Spacing."""
        col, row, _ = self.plane_axes()
        return float(self.spacing[row]), float(self.spacing[col])

    def _lps3(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Direction (3, 3), spacing (3,) and origin (3,) in 3D: a 2D image lies in the plane z = 0, its
        third axis the unit normal (as ITK converts 2D to 3D)."""
        d = min(self.dimension, 3)
        direction, spacing, origin = np.eye(3), np.ones(3), np.zeros(3)
        direction[:d, :d] = np.asarray(self.direction, dtype=np.float64)[:d, :d]
        spacing[:d] = [float(v) for v in self.spacing[:d]]
        origin[:d] = [float(v) for v in self.origin[:d]]
        return direction, spacing, origin

    def ras_affine(self) -> np.ndarray:
        """The 4×4 NIfTI (RAS) affine of the voxel axes ``(column, row, slice)``."""
        direction, spacing, origin = self._lps3()
        col, row, slice_ = self.plane_axes()
        axes = (col, row, 2 if slice_ is None else slice_)
        affine = np.eye(4)
        for out, axis in enumerate(axes):
            affine[:3, out] = LPS_TO_RAS @ direction[:, axis] * spacing[axis]
        affine[:3, 3] = LPS_TO_RAS @ origin
        return affine


def plane_affine(spacing: tuple[float, float]) -> np.ndarray:
    """The NIfTI (RAS) affine of an image with ``(row, column)`` ``spacing`` and nothing else known
    (a PNG): origin 0, identity LPS direction, as ITK reads such a file."""
    return Geometry((1, 1), (float(spacing[1]), float(spacing[0])), (0.0, 0.0), np.eye(2)).ras_affine()
