"""The generated table and every one of its rows, applied at top level, inside a standard sequence and
inside a private sequence (kept by Retain Safe Private), with and without each option."""

from __future__ import annotations

import datetime as dt
import json
import warnings
from pathlib import Path

import pydicom
import pytest
from dicom_testlib import KEY
from peers import SHARED_DATA, require_path
from pydicom.datadict import DicomDictionary
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from monai_anon_app.dicom.deidentifier import Deidentifier
from monai_anon_app.dicom.keys import KeyRing
from monai_anon_app.dicom.options import OPTIONS, DeidOptions
from monai_anon_app.dicom.profile import load_table

SHARED = SHARED_DATA / "ps3.15-annex-e"
UNKNOWN_CLASS = "1.2.826.0.1.3680043.9.7777.999"  # no IOD: every attribute counts as Type 3
CONTAINER = 0x00082218  # Anatomic Region Sequence: not in the table, so visited and kept
PRIVATE = ("ROW TEST", 0x0029, 0x10)
NAME = "Rowname^Given"
TEXT = "ROWTOKEN Rowname 20210304"
PATIENT_ID = "ROWPATIENT1"
RING = KeyRing(KEY.encode())


def test_table_is_stamped_and_complete():
    table = load_table()
    assert (table.edition, table.option_edition) == ("2026c", "2024b")
    assert "Innolitics" in table.sources["2024b"] and "KitwareMedical" in table.sources["2026c"]
    assert len(table.rows) == 656  # 655 rows + the private-attribute row
    assert {r.tag for r in table.rows} >= {"(50xx,xxxx)", "(60xx,3000)", "(60xx,4000)", "(gggg,eeee)"}
    assert not [r.name for r in table.rows if "see Note" in r.name]
    icon = next(r for r in table.rows if r.tag == "(0088,0200)")
    assert (icon.name, icon.basic) == ("Icon Image Sequence", "X")


def test_generator_reproduces_the_packaged_tables(tmp_path):
    require_path(SHARED, "the shared Annex E data", "a copy of ../shared/data beside the clone")
    from monai_anon_app.dicom import generate_tables

    generate_tables.main(["--data", str(SHARED), "--out", str(tmp_path)])
    here = Path(generate_tables.__file__).parent
    for name in ("profile_table.json", "iod_types.json"):
        assert json.loads((tmp_path / name).read_text()) == json.loads((here / name).read_text()), name


# -- every row ------------------------------------------------------------------------------------------
def _vr(row) -> str:
    if row.vr:
        return row.vr.split(" or ")[0]
    name = row.name.lower()
    if name.endswith("sequence"):
        return "SQ"
    if name.endswith("datetime"):
        return "DT"
    return "DA" if name.endswith("date") else "TM" if name.endswith("time") else "LO"


ROWS = [r for r in load_table().rows if r.value is not None and r.value >> 16 not in (0x0000, 0x0002)]
VALUES = {"AE": "AETITLE1", "AS": "042Y", "CS": "VALUE1", "DA": "20210304", "DS": "1.5", "DT": "20210304101112",
          "IS": "7", "LO": TEXT, "LT": TEXT, "PN": NAME, "SH": "ROWTOKEN", "ST": TEXT, "TM": "101112",
          "UC": TEXT, "UR": "http://example.com/x", "UT": TEXT, "AT": 0x00100010, "FL": 1.5, "FD": 1.5,
          "SL": 1, "SS": 1, "UL": 1, "US": 1, "SV": 1, "UV": 1}


def _value(row, vr: str):
    if row.keyword == "PatientID":
        return PATIENT_ID
    if vr == "SQ":
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "C1", "99X", "m"
        return Sequence([item])
    if vr == "UI":
        return f"1.2.826.0.1.3680043.9.7777.{row.value}"
    if vr in VALUES:
        return VALUES[vr]
    return b"\x01\x02"  # OB, OW, UN, OD, OF, OL, OV


def _fill(ds: Dataset) -> None:
    for row in ROWS:
        vr = _vr(row)
        ds.add_new(row.value, vr, _value(row, vr))


def _dataset(where: str) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = UNKNOWN_CLASS, "1.2.826.0.1.3680043.9.7777.1"
    ds.PatientName = NAME  # the scrubber's identifiers
    if where == "top":
        _fill(ds)
    else:
        item = Dataset()
        _fill(item)
        if where == "nested":
            ds.add_new(CONTAINER, "SQ", Sequence([item]))
        else:
            block = ds.private_block(PRIVATE[1], PRIVATE[0], create=True)
            block.add_new(PRIVATE[2], "SQ", Sequence([item]))
    return ds


def _roundtrip(ds: Dataset, path: Path) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out = FileDataset(str(path), ds, file_meta=meta, preamble=b"\0" * 128)
    out.is_little_endian, out.is_implicit_VR = True, False
    out.save_as(str(path), write_like_original=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(str(path))


def _expected(row, options: DeidOptions) -> str:
    """The row's action for a Type 3 attribute, computed here from the table text (independent oracle)."""
    values = [row.options.get(OPTIONS[f].column) for f in options.flags]
    if "K" in values:
        return "K"
    if "C" in values:
        return "C"
    return {"X/Z": "X", "X/D": "X", "X/Z/D": "X", "X/Z/U*": "X", "Z/D": "Z"}.get(row.basic, row.basic)


def _text(value) -> str:
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return "" if value is None else str(value)


def _check(row, vr: str, ds: Dataset, action: str, offset: int | None, top: bool) -> str | None:
    """``None`` when ``ds`` (the container after de-identification) shows ``action`` for ``row``."""
    tag, before = row.value, _value(row, vr)
    elem = ds.get(tag)
    if row.keyword in ("PatientID", "PatientName"):  # the patient's pseudonym at top level, else the value's
        expected = RING.pseudonym(PATIENT_ID if top else _text(before))
        return None if elem is not None and _text(elem.value) == expected else "no pseudonym"
    if action == "X":
        return None if elem is None else "not removed"
    if elem is None:
        return f"{action}: removed"
    value = elem.value
    if action == "Z":
        return None if (len(value) == 0 if vr == "SQ" else value in (None, "", b"")) else "not emptied"
    if vr == "SQ":  # D, K, C, U*: the sequence stays, its (harmless) item too
        return None if len(value) == 1 and value[0].CodeValue == "C1" else "sequence item lost"
    if action == "K":
        return None if value == before else "not kept"
    if action == "U" or (action in ("D", "C") and vr == "UI"):
        return None if _text(value) == RING.uid(before) else "UID not replaced by the keyed mapping"
    if action == "D":
        return None if value != before and value != _text(before) else "no dummy"
    if action == "C":
        if vr in ("DA", "DT"):
            shifted = dt.datetime.strptime(_text(value)[:8], "%Y%m%d").date()
            return None if (shifted - dt.date(2021, 3, 4)).days == offset and offset else "date not shifted"
        if vr == "AE":
            return None if _text(value).startswith("AE_") else "AE not replaced"
        if vr in ("LO", "LT", "ST", "UT", "UC", "SH"):
            text = _text(value)  # the other attributes hold the same words, so they are identifiers too
            return None if "Rowname" not in text and "20210304" not in text else f"not cleaned: {value!r}"
        if vr == "PN":
            return None if _text(value) != NAME else "name kept"
        return None
    return f"unknown action {action}"


OPTION_SETS = [{}, *({flag: True} for flag in OPTIONS)]


@pytest.mark.parametrize("where", ["top", "nested", "private"])
@pytest.mark.parametrize("flags", OPTION_SETS, ids=lambda f: next(iter(f), "basic"))
def test_every_row_action(tmp_path, where, flags):
    safe = {PRIVATE} if where == "private" else set()
    flags = {**flags, "retain_safe_private": True} if where == "private" else flags
    options = DeidOptions(key=KEY, safe_private=frozenset(safe), **flags)
    ds = _roundtrip(_dataset(where), tmp_path / "in.dcm")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        record = Deidentifier(options).apply(ds)
    ds = _roundtrip(ds, tmp_path / "out.dcm")
    if where == "nested":
        ds = ds[CONTAINER].value[0]
    elif where == "private":
        ds = ds.private_block(PRIVATE[1], PRIVATE[0])[PRIVATE[2]].value[0]
    problems = []
    for row in ROWS:
        problem = _check(row, _vr(row), ds, _expected(row, options), record.date_offset_days, where == "top")
        if problem:
            problems.append(f"{row.tag} {row.keyword or row.name} ({row.basic}): {problem}")
    assert not problems, "\n".join(problems)


def test_rows_without_a_dictionary_vr_are_still_covered():
    unknown = [r for r in ROWS if r.value not in DicomDictionary]
    assert unknown and all(_vr(r) for r in unknown)  # written with a guessed VR, checked like the rest


# -- compound codes against the IOD ---------------------------------------------------------------------
RESOLVED = {  # Type -> code -> action (PS3.15 E.1.1: the weakest action that keeps the IOD valid)
    "3": {"X/Z": "X", "X/D": "X", "X/Z/D": "X", "Z/D": "Z", "X/Z/U*": "X", "Z": "Z"},
    "2": {"X/Z": "Z", "X/D": "D", "X/Z/D": "Z", "Z/D": "Z", "X/Z/U*": "Z", "Z": "Z"},
    "1": {"X/Z": "Z", "X/D": "D", "X/Z/D": "D", "Z/D": "D", "X/Z/U*": "U*", "Z": "D"},
}


def _top_level_types(sop_class: str) -> dict[str, str]:
    """Strongest Type per top-level keyword in the IOD, read from highdicom directly (the oracle)."""
    from highdicom._iods import IOD_MODULE_MAP, SOP_CLASS_UID_IOD_KEY_MAP
    from highdicom._modules import MODULE_ATTRIBUTE_MAP

    out: dict[str, str] = {}
    for module in IOD_MODULE_MAP[SOP_CLASS_UID_IOD_KEY_MAP[sop_class]]:
        for attr in MODULE_ATTRIBUTE_MAP[module["key"]]:
            if attr["path"]:
                continue
            kind = {"1": "1", "1C": "1", "2": "2", "2C": "2"}.get(attr["type"], "3")
            out[attr["keyword"]] = min(out.get(attr["keyword"], "3"), kind)
    return out


@pytest.mark.parametrize("sop_class", [
    "1.2.840.10008.5.1.4.1.1.2",  # CT Image
    "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image
    "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image For Presentation
    "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
])
def test_compound_codes_follow_the_iod(tmp_path, sop_class):
    types = _top_level_types(sop_class)
    rows = [r for r in ROWS if r.basic in RESOLVED["3"] and r.keyword not in ("PatientID", "PatientName")]
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, "1.2.826.0.1.3680043.9.7777.1"
    for row in rows:
        ds.add_new(row.value, _vr(row), _value(row, _vr(row)))
    ds = _roundtrip(ds, tmp_path / "in.dcm")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Deidentifier(DeidOptions(key=KEY)).apply(ds)
    ds = _roundtrip(ds, tmp_path / "out.dcm")
    seen, problems = set(), []
    for row in rows:
        kind = types.get(row.keyword, "3")
        seen.add(kind)
        action = RESOLVED[kind][row.basic]
        problem = _check(row, _vr(row), ds, action, None, True)
        if problem:
            problems.append(f"{row.keyword} ({row.basic}, Type {kind}, expected {action}): {problem}")
    assert not problems, "\n".join(problems)
    assert {"2", "3"} <= seen and ("1" in seen or sop_class == "1.2.840.10008.5.1.4.1.1.2")
