"""What was done to an image's pixels, and so what its DICOM markers may truthfully claim.

PS3.15 E.3.1/E.3.2 and PS3.3 C.7.6.1 (General Image): only when the pixels no longer show what
identifies the patient may a file say Burned In Annotation (0028,0301) = NO and Recognizable Visual
Features (0028,0302) = NO and declare the Clean Pixel Data and Clean Recognizable Visual Features
Options (CID 7050 codes 113101, 113102). Here that is a *full* anonymization only: the whole image
regenerated with a synthetic identity. A residual anonymization adds the model's change to the original
pixels (fine identifying detail stays) and a counterfactual keeps the patient's identity by design: both
say Recognizable Visual Features = YES and declare no clean-pixel option. Headers-only work leaves the
pixels and their markers as they were. The Derivation Description (0008,2111) says what was done.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from monai_anon_app.defaults import MODES

__all__ = ["KEPT", "PixelChange", "anonymized", "counterfactual", "of_command"]

Kind = Literal["kept", "anonymized", "residual", "counterfactual"]


@dataclass(frozen=True)
class PixelChange:
    """One of: ``kept`` (headers only), ``anonymized`` (full), ``residual``, ``counterfactual``."""

    kind: Kind
    target: str | None = None  # counterfactual: the class moved towards (None: a reference image's)
    mode: str = "full"  # counterfactual: full or residual

    @property
    def changed(self) -> bool:
        """The pixels were replaced by the model's output."""
        return self.kind != "kept"

    @property
    def clean(self) -> bool:
        """Burned In Annotation and Recognizable Visual Features may be NO, with the clean-pixel codes."""
        return self.kind == "anonymized"

    @property
    def recognizable(self) -> str | None:
        """Recognizable Visual Features to write (``None``: leave the input's value as it is)."""
        if self.kind == "kept":
            return None
        return "NO" if self.clean else "YES"

    @property
    def method(self) -> str | None:
        """The entry this change adds to De-identification Method (0012,0063), at most 64 characters."""
        return {"kept": None,
                "anonymized": "pixels regenerated with a synthetic identity",
                "residual": "pixels changed by the model; identifying detail kept",
                "counterfactual": "counterfactual pixels; patient identity kept"}[self.kind]

    @property
    def derivation(self) -> str:
        """Derivation Description (0008,2111) of the output image ("" when the pixels were kept)."""
        if self.kind == "anonymized":
            return ("Anonymized by monai-anon: the whole image regenerated with the patient's identity features "
                    "replaced by a synthetic identity")
        if self.kind == "residual":
            return ("Anonymized by monai-anon in residual mode: the model's change of identity added to the original "
                    "pixels; fine detail of the original, including identifying detail, is kept")
        if self.kind == "counterfactual":
            towards = f"class {self.target}" if self.target else "a reference image"
            how = "the whole image regenerated" if self.mode == "full" else "the model's change added to the original"
            return (f"Counterfactual by monai-anon: medical features replaced by those of {towards} ({how}); "
                    "the patient's identity features are kept, the image is not anonymized")
        return ""


KEPT = PixelChange("kept")


def anonymized(mode: str) -> PixelChange:
    """The change of an anonymization in ``mode`` (``full`` or ``residual``)."""
    if mode not in MODES:
        raise ValueError(f"unknown anonymization mode {mode!r}; choose one of {', '.join(MODES)}")
    return PixelChange("anonymized" if mode == "full" else "residual")


def counterfactual(target: str | None, mode: str) -> PixelChange:
    """The change of a counterfactual towards ``target`` in ``mode`` (``full`` or ``residual``)."""
    if mode not in MODES:
        raise ValueError(f"unknown counterfactual mode {mode!r}; choose one of {', '.join(MODES)}")
    return PixelChange("counterfactual", target, mode)


def of_command(command: str, mode: str, target: str | None = None, headers_only: bool = False) -> PixelChange:
    """The change of ``anonymize`` or ``counterfactual`` in ``mode``; :data:`KEPT` with ``headers_only``."""
    if headers_only:
        return KEPT
    if command == "anonymize":
        return anonymized(mode)
    if command == "counterfactual":
        return counterfactual(target, mode)
    raise ValueError(f"unknown command {command!r}; pixels change only with anonymize or counterfactual")
