"""Where each output goes: by default, names that carry nothing from the input path.

Input paths carry identifiers (archives are laid out as ``DOE^JOHN/20230101/…``; the sample study names
its files by patient ID). So a DICOM output is named by its *new* UIDs,
``OUTPUT/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``, and a PNG or NIfTI output by a
keyed pseudonym of its path relative to INPUT, ``OUTPUT/<pseudonym>.png`` (an HMAC-SHA256 under the
run's key: same input and key, same name; nobody without the key can link them). The mapping file
(``--mapping-file``) is the one output that links input to output. ``keep_names`` mirrors the input's
relative paths instead (they may carry identifiers: the commands warn). A single input file written to
a path that is not an existing folder goes exactly there: its user chose that name.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from pydicom.dataset import Dataset

from monai_anon_app.dicom.keys import KeyRing
from monai_anon_app.errors import InputError
from monai_anon_app.imageio.formats import NIFTI_SUFFIXES
from monai_anon_app.imageio.images import PARTIAL_PREFIX
from monai_anon_app.runner import Skipped
from monai_anon_app.runner.journal import JOURNAL_NAME

__all__ = ["DUPLICATE_LABEL", "DUPLICATE_MESSAGE", "KEEP_NAMES_WARNING", "OutputLayout", "UniqueNames", "instance_path",
           "remove_partial_files"]

KEEP_NAMES_WARNING = ("monai-anon: warning: --keep-names: output file and folder names mirror the input's and may "
                      "carry identifiers (patient names, IDs, dates); share them only where the input names may go")
#: how a second input of an already written instance is reported (skipped, never overwriting the first)
DUPLICATE_MESSAGE = "Another input file holds the same instance (same SOP Instance UID); only the first was written."
DUPLICATE_LABEL = "duplicate instance"
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_UID_KEYWORDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


def instance_path(ds: Dataset, keys: KeyRing) -> PurePosixPath:
    """``<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm`` of ``ds`` (a de-identified data
    set: its UIDs are the new ones). A value that is not a UID (possible with ``--retain-uids``) is
    replaced by a keyed token, so no name can climb out of the output folder or carry text."""
    parts = []
    for keyword in _UID_KEYWORDS:
        value = str(ds.get(keyword, "") or "").strip("\0 ")
        parts.append(value if _UID.match(value) and len(value) <= 64 else f"x{keys.tag('name-' + keyword, value, 32)}")
    return PurePosixPath(parts[0], parts[1], parts[2] + ".dcm")


def _own_file(path: Path) -> bool:
    """A file this package leaves in an output folder: a resume journal, or one a killed run left half-written."""
    return path.name == JOURNAL_NAME or path.name.startswith(PARTIAL_PREFIX)


def remove_partial_files(folder: Path) -> int:
    """Delete the half-written files a killed run left under ``folder``; return how many."""
    partial = [p for p in Path(folder).rglob(f"{PARTIAL_PREFIX}*") if p.is_file()] if Path(folder).is_dir() else []
    for p in partial:
        p.unlink(missing_ok=True)
    return len(partial)


class UniqueNames:
    """Output paths under ``root``, each handed out once: a second input of the same instance is
    :class:`~monai_anon_app.runner.Skipped` instead of overwriting the first."""

    def __init__(self, root: Path, keys: KeyRing) -> None:
        self.root, self.keys = Path(root), keys
        self._used: set[Path] = set()

    def claim(self, relative: str | PurePosixPath | Path) -> Path:
        out = self.root / relative
        if out in self._used:
            raise Skipped(DUPLICATE_MESSAGE, DUPLICATE_LABEL)
        self._used.add(out)
        return out

    def instance(self, ds: Dataset) -> Path:
        """``root/<Study>/<Series>/<SOP>.dcm`` of the de-identified data set ``ds`` (see :func:`instance_path`)."""
        return self.claim(instance_path(ds, self.keys))


class OutputLayout:
    """The input files under ``src`` and the output path of each under ``dst`` (see the module docstring)."""

    def __init__(self, src: Path, dst: Path, key: bytes, keep_names: bool = False) -> None:
        src, dst = Path(src), Path(dst)
        if not src.exists():
            raise InputError(f"{src} does not exist")
        if src.is_dir():
            s, d = src.resolve(), dst.resolve()
            if d == s or s in d.parents:
                raise InputError(f"the output folder {dst} must not be the input folder or inside it; "
                                 "choose a folder outside it")
            if dst.exists() and not dst.is_dir():
                raise InputError(f"{dst} is a file; the output of a folder must be a folder")
        self.src, self.dst, self.keep_names = src, dst, keep_names
        self.keys = KeyRing(key)
        self.single = src.is_file() and not dst.is_dir()  # one file to a path of its user's choosing
        self._names = UniqueNames(dst, self.keys)

    def inputs(self) -> list[Path]:
        """Every file to consider, in sorted order (a single input file: just it)."""
        if self.src.is_file():
            return [self.src]
        return [p for p in sorted(self.src.rglob("*")) if p.is_file() and not _own_file(p)]

    def _relative(self, path: Path) -> Path:
        return Path(path.name) if self.src.is_file() else path.relative_to(self.src)

    def dicom(self, path: Path) -> Callable[[Dataset], Path]:
        """The output path of the DICOM file ``path``, from its de-identified data set."""
        if self.single:
            return lambda ds: self.dst
        if self.keep_names:
            return lambda ds: self._names.claim(self._relative(path))
        return self._names.instance

    def image(self, path: Path) -> Path:
        """The output path of the PNG or NIfTI file ``path``: a keyed pseudonym with the input's suffix."""
        if self.single:
            return self.dst
        rel = self._relative(path)
        if self.keep_names:
            return self._names.claim(rel)
        name = path.name.lower()
        suffix = next((s for s in sorted(NIFTI_SUFFIXES, key=len, reverse=True) if name.endswith(s)), path.suffix)
        return self._names.claim(self.keys.tag("output-name", rel.as_posix(), 32).lower() + suffix.lower())

    def describe(self) -> str:
        """How outputs are named, for the line before a batch's summary."""
        if self.single:
            return f"written to {self.dst}"
        if self.keep_names:
            return f"written under {self.dst} with the input's names"
        return (f"written under {self.dst}, named by new UIDs (DICOM) or keyed pseudonyms (other formats); only the "
                "mapping file, if asked for, links them to the inputs")
