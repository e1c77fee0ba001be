"""The de-identification engine: one visitor over the dataset tree driven by a precomputed plan.

Speed comes from never decoding what needs no change: the visitor looks at the tags of pydicom's
still-raw elements, one dict lookup each, and only elements with an action are touched. Replacement
string values are written back as raw bytes in the file's own encoding, so pydicom writes them without
conversion. Sequences are parsed (their items may hold anything) and visited at every depth, private
sequences included when Retain Safe Private keeps them.

This relies on pydicom 2.x internals (``Dataset._dict`` holding ``RawDataElement`` until accessed);
the project pins ``pydicom<3``.
"""

from __future__ import annotations

import copy
import io
from dataclasses import dataclass, field

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.tag import BaseTag
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from monai_anon_app import __version__
from monai_anon_app.dicom.dates import shift_values
from monai_anon_app.dicom.keys import KeyRing
from monai_anon_app.dicom.options import DeidOptions
from monai_anon_app.dicom.pixel_change import KEPT, PixelChange
from monai_anon_app.dicom.profile import Plan, compile_plan, iod_types, resolve
from monai_anon_app.dicom.scrub import Scrubber

__all__ = ["IMPLEMENTATION_CLASS_UID", "IMPLEMENTATION_VERSION", "DeidRecord", "Deidentifier"]

IMPLEMENTATION_CLASS_UID = generate_uid(prefix="2.25.", entropy_srcs=["monai-anon implementation class"])
IMPLEMENTATION_VERSION = ("MONAI_ANON_" + __version__.replace(".", ""))[:16]
SOFTWARE = "monai-anon"
TEXT_VRS = frozenset(("LO", "LT", "SH", "ST", "UC", "UT"))
STRING_VRS = frozenset(("AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC",
                        "UI", "UR", "UT"))
DUMMY = {"AE": "ANONYMOUS", "AS": "000D", "CS": "ANONYMIZED", "DA": "19000101", "DS": "0",
         "DT": "19000101000000", "IS": "0", "LO": "ANONYMIZED", "LT": "ANONYMIZED", "PN": "ANONYMIZED",
         "SH": "ANONYMIZED", "ST": "ANONYMIZED", "TM": "000000", "UC": "ANONYMIZED", "UR": "",
         "UT": "ANONYMIZED"}
NUMERIC_DUMMY = {"US": 0, "SS": 0, "UL": 0, "SL": 0, "UV": 0, "SV": 0, "FL": 0.0, "FD": 0.0, "AT": 0}
# Beyond Table E.1-1: attributes that are opaque copies of other attributes are removed.
EXTRA_REMOVALS = {0x04000500: "Encrypted Attributes Sequence"}
MARKER_TAGS = (0x00120062, 0x00120063, 0x00120064, 0x00280303, 0x00280301, 0x00280302)
CONTRIBUTING_EQUIPMENT = 0x0018A001
COMMON_INSTANCE_REFERENCE = (0x00081115, 0x00081200)  # Referenced Series, Studies Containing Other ...
TRANSFER_SYNTAX = {(True, True): ImplicitVRLittleEndian, (False, True): ExplicitVRLittleEndian,
                   (False, False): ExplicitVRBigEndian}


@dataclass
class DeidRecord:
    """What one call changed: original and new key identifiers (for the optional mapping file)."""

    patient_id: str
    pseudonym: str
    identity_key: str
    date_offset_days: int | None
    uids: dict[str, tuple[str, str]] = field(default_factory=dict)  # keyword -> (original, new)
    warnings: list[str] = field(default_factory=list)


class _Context:
    __slots__ = ("changes", "keep_references", "offset", "pseudonym", "scrubber", "types", "warnings")

    def __init__(self, types: dict, offset: int | None, pseudonym: str, scrubber: Scrubber | None,
                 keep_references: bool) -> None:
        self.types, self.offset, self.pseudonym, self.scrubber = types, offset, pseudonym, scrubber
        self.keep_references = keep_references
        self.warnings: list[str] = []
        self.changes = 0  # actions that may change bytes (over-counting only costs speed)


def patient_key(ds: Dataset) -> str:
    """What identifies the patient: Patient ID, else name + birth date, else the study."""
    pid = str(ds.get("PatientID", "") or "").strip()
    if pid:
        return pid
    name = str(ds.get("PatientName", "") or "").strip()
    if name:
        return f"{name}|{ds.get('PatientBirthDate', '')}"
    return "study:" + str(ds.get("StudyInstanceUID", "") or "")


class Deidentifier:
    """Applies PS3.15 de-identification with ``options`` to datasets, in place."""

    def __init__(self, options: DeidOptions) -> None:
        self.options = options
        self.plan: Plan = compile_plan(options)
        self.keys = KeyRing(options.key)
        self._markers: dict[tuple, dict[int, object]] = {}
        self._scrub_on = any(options.columns)  # any option that can turn an action into C

    # -- public -----------------------------------------------------------------------------------
    def identity_key(self, ds: Dataset) -> str:
        """Keyed hash of the patient (same for every image of the patient, never the raw ID)."""
        return self.keys.identity_key(patient_key(ds))

    def apply(self, ds: Dataset, pixels: PixelChange = KEPT) -> DeidRecord:
        """De-identify ``ds`` (and its ``file_meta``) in place; return what changed. ``pixels``: what was
        done to its pixels, which decides the pixel markers (:mod:`~monai_anon_app.dicom.pixel_change`)."""
        key = patient_key(ds)
        pid = str(ds.get("PatientID", "") or "").strip()
        own = self.keys.is_own_pseudonym(pid)
        record = DeidRecord(pid, self.keys.pseudonym(key), self.keys.identity_key(key), None)
        if self.options.retain_modified_dates:
            already = own and str(ds.get("LongitudinalTemporalInformationModified", "")).upper() == "MODIFIED"
            record.date_offset_days = 0 if already else self.keys.date_offset(key)
        before = {k: str(ds.get(k, "") or "") for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")}
        scrubber = Scrubber.from_dataset(ds) if self._scrub_on else None
        # With a Common Instance Reference module the references are needed for IOD conformance, so
        # X/Z/U* keeps them (with new UIDs) instead of removing them.
        keep_refs = any(tag in ds._dict for tag in COMMON_INSTANCE_REFERENCE)
        ctx = _Context(iod_types(str(ds.get("SOPClassUID", "") or "")), record.date_offset_days,
                       record.pseudonym, scrubber, keep_refs)
        self._visit(ds, (), ctx)
        self._mark(ds, pixels)
        self._file_meta(ds)
        ds.preamble = b"\0" * 128  # a preamble may carry a TIFF header or other payload
        for k, old in before.items():
            record.uids[k] = (old, str(ds.get(k, "") or ""))
        record.warnings = ctx.warnings
        return record

    # -- the visitor ------------------------------------------------------------------------------
    def _visit(self, ds: Dataset, path: tuple[int, ...], ctx: _Context) -> None:
        d = ds._dict
        actions = self.plan.actions
        todo = []
        for tag in d:
            if tag & 0x10000:
                todo.append((tag, "P"))
                continue
            act = actions.get(tag)
            if act is None:
                group = tag >> 16
                if 0x5000 <= group <= 0x50FF or 0x6000 <= group <= 0x60FF or tag in EXTRA_REMOVALS:
                    act = "X"  # curves, overlays
                elif d[tag].VR == "SQ":
                    act = "K"
                else:
                    continue
            todo.append((tag, act))
        private = []
        ctx.changes += sum(1 for _, act in todo if act != "K")
        for tag, act in todo:
            if act == "P":
                if self.options.retain_safe_private:
                    private.append(tag)
                else:
                    del d[tag]
                continue
            if "/" in act or act == "Z":
                if act == "X/Z/U*" and ctx.keep_references:
                    act = "U*"
                else:
                    act = resolve(act, ctx.types.get((*path, tag), "3"))
            if act == "X":
                del d[tag]
                continue
            elem = d[tag]
            vr = elem.VR
            kind = vr if vr and vr != "UN" and len(vr) == 2 else self.plan.vrs.get(tag, vr or "UN")
            if kind == "SQ":
                if act == "Z":
                    self._put(d, tag, elem, b"", kind)
                else:  # K, D, C, U*: keep the sequence, clean its items
                    self._items(ds, tag, path, ctx)
            elif act == "U":
                self._put_text(d, tag, elem, kind, "\\".join(self.keys.uid(u) for u in _split(elem) if u))
            elif act == "Z":
                self._put(d, tag, elem, b"", kind)
            elif act == "D":
                self._dummy(d, tag, elem, kind)
            elif act == "C":
                self._clean(ds, tag, elem, kind, ctx)
            elif act == "I":  # Patient ID / Name: the keyed pseudonym (a dummy value Z and D allow)
                value = _text(elem).strip()
                new = ctx.pseudonym if not path else (self.keys.pseudonym(value) if value else "")
                self._put_text(d, tag, elem, kind, new)
        if private:
            self._private(ds, private, path, ctx)

    def _items(self, ds: Dataset, tag: int, path: tuple[int, ...], ctx: _Context) -> None:
        raw, changes = ds._dict[tag], ctx.changes
        try:
            items = ds[tag].value
        except Exception as exc:  # a sequence pydicom cannot parse cannot be checked: drop it
            del ds._dict[tag]
            ctx.warnings.append(f"removed unreadable sequence {tag:08X} ({exc.__class__.__name__})")
            return
        if isinstance(items, Sequence):
            sub = (*path, tag)
            for item in items:
                self._visit(item, sub, ctx)
                # the item keeps its encoding; saying so spares pydicom a per-element VR pass at write time
                item.read_encoding = item._character_set
            if ctx.changes == changes and raw.is_raw:  # nothing inside needed a change: write the
                ds._dict[tag] = raw  # original bytes again instead of re-encoding the items
        elif items not in (None, b"", ""):
            del ds._dict[tag]  # an SQ attribute pydicom left undecoded: unsafe to keep

    def _private(self, ds: Dataset, tags: list[int], path: tuple[int, ...], ctx: _Context) -> None:
        """Retain Safe Private: keep only listed (creator, group, element) attributes and their creators."""
        d = ds._dict
        creators = {}
        for tag in tags:
            if 0x10 <= tag & 0xFFFF <= 0xFF:
                creators[(tag >> 16, tag & 0xFF)] = str(ds[tag].value or "").strip()
        used = set()
        safe = self.options.safe_private
        for tag in tags:
            group, elem = tag >> 16, tag & 0xFFFF
            if elem < 0x1000:
                continue
            block = (group, elem >> 8)
            if (creators.get(block), group, elem & 0xFF) not in safe:
                del d[tag]
                continue
            vr, value = d[tag].VR, d[tag].value
            if vr == "SQ":
                self._items(ds, tag, path, ctx)
            elif vr in (None, "UN") and isinstance(value, bytes) and value[:4] in (b"\xfe\xff\x00\xe0",
                                                                                  b"\xff\xfe\xe0\x00"):
                del d[tag]  # a sequence of unknown VR cannot be visited, so it cannot be kept
                ctx.warnings.append(f"removed private sequence {tag:08X} of unknown VR")
                continue
            used.add(block)
        for tag in tags:
            if tag & 0xFFFF < 0x1000 and (tag >> 16, tag & 0xFF) not in used:
                del d[tag]

    # -- element writers --------------------------------------------------------------------------
    @staticmethod
    def _put(d: dict, tag: int, elem, value: bytes, kind: str) -> None:
        if elem.is_raw:
            d[tag] = RawDataElement(tag, elem.VR, len(value), value, 0, elem.is_implicit_VR, elem.is_little_endian)
        else:
            d[tag] = DataElement(tag, elem.VR or kind, Sequence() if kind == "SQ" else None)

    def _put_text(self, d: dict, tag: int, elem, kind: str, text: str) -> None:
        if elem.is_raw:
            data = text.encode("ascii", "replace")
            if len(data) % 2:
                data += b"\0" if kind == "UI" else b" "
            self._put(d, tag, elem, data, kind)
        else:
            d[tag] = DataElement(tag, elem.VR or kind, text)

    def _dummy(self, d: dict, tag: int, elem, kind: str) -> None:
        if kind == "UI":
            self._put_text(d, tag, elem, kind, "\\".join(self.keys.uid(u) for u in _split(elem) if u))
        elif kind in DUMMY:
            self._put_text(d, tag, elem, kind, DUMMY[kind])
        elif kind in NUMERIC_DUMMY:
            d[tag] = DataElement(tag, kind, NUMERIC_DUMMY[kind])
        else:  # OB, OW, UN, ...: no meaningful dummy, so an empty value
            self._put(d, tag, elem, b"", kind)

    def _clean(self, ds: Dataset, tag: int, elem, kind: str, ctx: _Context) -> None:
        d = ds._dict
        if kind in ("DA", "DT", "TM"):
            if ctx.offset is None:  # C on a date without Modified Dates (cannot happen with the table)
                self._dummy(d, tag, elem, kind)
                return
            shifted = shift_values(_text(elem), kind, ctx.offset)
            self._put_text(d, tag, elem, kind, shifted) if shifted is not None else self._put(d, tag, elem, b"", kind)
        elif kind == "UI":
            self._dummy(d, tag, elem, kind)
        elif kind == "AE":
            value = _text(elem).strip()
            self._put_text(d, tag, elem, kind, "AE_" + self.keys.tag("ae", value, 12) if value else "")
        elif kind in TEXT_VRS:
            value = ds[tag].value  # decoded with the dataset's character set
            if value is not None and ctx.scrubber is not None:
                values = [ctx.scrubber(str(v)) for v in ([value] if isinstance(value, str) else value)]
                ds[tag].value = values if len(values) > 1 else values[0]
        elif kind == "PN":
            self._dummy(d, tag, elem, kind)
        # other VRs (codes, numbers): clean means keep

    # -- markers and file meta --------------------------------------------------------------------
    def _marker_dataset(self, pixels: PixelChange) -> Dataset:
        opts = self.options
        m = Dataset()
        m.PatientIdentityRemoved = "YES"
        methods = [f"{SOFTWARE} {__version__}", f"PS3.15 Basic Profile table {self.plan.edition}"]
        methods += [name.replace("_", " ")[:64] for name in opts.flags]
        if pixels.method:
            methods.append(pixels.method)
        m.DeidentificationMethod = methods
        items = []
        for keyword in opts.code_keywords(pixels.clean):
            code = getattr(codes.cid7050, keyword)
            item = Dataset()
            item.CodeValue, item.CodingSchemeDesignator = code.value, code.scheme_designator
            item.CodeMeaning = code.meaning
            items.append(item)
        m.DeidentificationMethodCodeSequence = items
        m.LongitudinalTemporalInformationModified = opts.temporal
        if pixels.clean:
            m.BurnedInAnnotation = "NO"
        if pixels.recognizable is not None:
            m.RecognizableVisualFeatures = pixels.recognizable
        m.ContributingEquipmentSequence = [self._equipment_item()]
        return m

    def _equipment_item(self) -> Dataset:
        purpose = Dataset()
        purpose.CodeValue, purpose.CodingSchemeDesignator = "109104", "DCM"
        purpose.CodeMeaning = "De-identifying Equipment"
        item = Dataset()
        item.PurposeOfReferenceCodeSequence = [purpose]
        item.Manufacturer = SOFTWARE
        item.ManufacturerModelName = f"{SOFTWARE} deid"
        item.SoftwareVersions = __version__
        item.ContributionDescription = ("De-identified: PS3.15 Basic Application Level Confidentiality Profile "
                                        f"({self.options.describe()})")[:1024]
        return item

    def _markers_for(self, implicit: bool | None, little: bool | None, pixels: PixelChange) -> dict[int, object]:
        key = (implicit, little, pixels)
        cached = self._markers.get(key)
        if cached is None:
            m = self._marker_dataset(pixels)
            if implicit is None or little is None:
                cached = {tag: m[tag] for tag in m}
            else:  # pre-encode once in the file's encoding; raw elements are written as they are
                fp = DicomBytesIO()
                fp.is_implicit_VR, fp.is_little_endian = implicit, little
                write_dataset(fp, m)
                raw = read_dataset(io.BytesIO(fp.getvalue()), implicit, little)
                cached = dict(raw._dict)
            self._markers[key] = cached
        return cached

    def _mark(self, ds: Dataset, pixels: PixelChange) -> None:
        d = ds._dict
        for tag in MARKER_TAGS[:4]:
            d.pop(tag, None)
        markers = self._markers_for(ds.is_implicit_VR, ds.is_little_endian, pixels)
        equipment = d.get(CONTRIBUTING_EQUIPMENT)
        for tag, elem in markers.items():
            if tag == CONTRIBUTING_EQUIPMENT and equipment is not None:
                continue
            d[tag] = copy.deepcopy(elem) if isinstance(elem, DataElement) else elem
        if equipment is not None:
            seq = ds[CONTRIBUTING_EQUIPMENT].value
            if isinstance(seq, Sequence):
                seq.append(self._equipment_item())
            else:
                ds.ContributingEquipmentSequence = [self._equipment_item()]

    def _file_meta(self, ds: Dataset) -> None:
        """A new File Meta Information group: only what Part 10 requires, naming this software."""
        old = getattr(ds, "file_meta", None) or FileMetaDataset()
        d = ds._dict
        sop_class = _text(d[0x00080016]) if 0x00080016 in d else str(old.get("MediaStorageSOPClassUID", ""))
        sop = _text(d[0x00080018]) if 0x00080018 in d else ""
        if not sop and old.get("MediaStorageSOPInstanceUID"):
            sop = self.keys.uid(str(old.MediaStorageSOPInstanceUID))
        syntax = old.get("TransferSyntaxUID")
        actual = TRANSFER_SYNTAX.get((ds.is_implicit_VR, ds.is_little_endian))
        if actual and (not syntax or not syntax.is_transfer_syntax
                       or (syntax.is_implicit_VR, syntax.is_little_endian) != (ds.is_implicit_VR, ds.is_little_endian)):
            syntax = actual  # the meta header disagreed with how the data set is really encoded
        meta = FileMetaDataset()
        meta._dict.update({  # raw explicit-VR-little-endian elements: nothing to validate or convert
            0x00020001: _raw_meta(0x00020001, "OB", b"\x00\x01"),
            0x00020002: _raw_meta(0x00020002, "UI", sop_class.encode()),
            0x00020003: _raw_meta(0x00020003, "UI", sop.encode()),
            0x00020012: _raw_meta(0x00020012, "UI", IMPLEMENTATION_CLASS_UID.encode()),
            0x00020013: _raw_meta(0x00020013, "SH", IMPLEMENTATION_VERSION.encode()),
        })
        if syntax:
            meta._dict[0x00020010] = _raw_meta(0x00020010, "UI", str(syntax).encode())
        ds.file_meta = meta


def _raw_meta(tag: int, vr: str, value: bytes) -> RawDataElement:
    if len(value) % 2:
        value += b"\0" if vr in ("UI", "OB") else b" "
    return RawDataElement(BaseTag(tag), vr, len(value), value, 0, False, True)


def _text(elem) -> str:
    """An element's value as text without a full pydicom conversion (ASCII-safe VRs only)."""
    if elem.is_raw:
        value = elem.value
        return value.decode("latin-1").rstrip("\0 ") if value else ""
    value = elem.value
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def _split(elem) -> list[str]:
    return [v.strip("\0 ") for v in _text(elem).split("\\")]
