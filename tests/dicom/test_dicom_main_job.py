"""The README's main job (``monai-anon anonymize --sample OUT``) and the CLI's DICOM input path leave no
identifying data in any byte or name of their output: the sample's own identifiers, canary values planted
in a copy of the sample (headers, private tags, file meta, preamble, folder and file names, NIfTI text
fields and extensions, PNG text and EXIF chunks), and the PHI-planted fixture as DX radiographs.

Runs the real console entry point as a user does, with the suite's tiny model (what is checked here does
not depend on which model draws the pixels; ``tests/science/test_shipped_model.py`` covers the shipped
one). 12-bit pixel data cannot hold
two printable ASCII bytes in a row (every second byte is at most 0x0F), so a token found in a DICOM
output's bytes is a leak, never a chance match in the pixels.
"""

from __future__ import annotations

import csv
import gzip
import subprocess
import sys
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from dicom_testlib import PHI_DATES, PHI_TOKENS, build_phi_radiograph
from PIL import Image, PngImagePlugin

from monai_anon_app.data.sample import sample_study

CANARIES = {
    "name": "Canarybird^Zebediah", "id": "CANARYID778812", "other id": "CANARYOTHERID", "birth": "19470612",
    "institution": "Canary Wharf Infirmary", "private": "CANARYPRIVATE Zebediah", "private id": "CANARYPRIVID",
    "comment": "CANARYCOMMENT", "ae": "CANARYAE", "preamble": "CANARYPREAMBLE", "folder": "DOE^CANARYJOHN",
    "date folder": "20230101", "file": "CANARYFILE", "descrip": "CANARYDESCRIP", "aux": "CANARYAUX",
    "intent": "CANARYINT", "db": "CANARYDB", "extension": "CANARYEXTENSION", "png text": "CANARYPNGTEXT",
    "png ztxt": "CANARYPNGZTXT", "png itxt": "CANARYPNGITXT", "exif": "CANARYEXIF", "notes": "CANARYNOTES",
}


def monai_anon(*args: object) -> subprocess.CompletedProcess:
    """The real console entry point, in a subprocess (exit code and streams as a user sees them)."""
    return subprocess.run([sys.executable, "-m", "monai_anon_app.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=900)


def _read(path: Path) -> pydicom.FileDataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(str(path))


def _content(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def leaks(root: Path, needles) -> list[str]:
    """Each needle found (case-insensitive) in an output's path below ``root`` or in its (unzipped) bytes."""
    found = []
    files = [p for p in root.rglob("*") if p.is_file()]
    assert files, f"{root} holds no output"
    for path in files:
        name, data = path.relative_to(root).as_posix().lower(), _content(path).lower()
        found += [f"{n!r} in {'name' if n.lower() in name else 'bytes'} of {name}" for n in needles
                  if n.lower() in name or n.lower().encode() in data]
    return found


def sample_identifiers() -> set[str]:
    """What identifies the sample's patients: names, IDs, dates, sites, staff, devices, UIDs, file names."""
    values: set[str] = set()
    for path in sorted((sample_study() / "images").glob("*.dcm")):
        ds = _read(path)
        values.add(path.stem)
        for keyword in ("PatientID", "PatientBirthDate", "StudyDate", "AcquisitionDateTime", "AccessionNumber",
                        "InstitutionName", "InstitutionAddress", "StationName", "DeviceSerialNumber",
                        "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            values.add(str(ds.get(keyword)))
        for keyword in ("PatientName", "ReferringPhysicianName", "OperatorsName"):
            values.update(part for part in str(ds.get(keyword)).split("^") if len(part) >= 4)
        values.update(str(e.value) for e in ds if e.tag.is_private and e.VR == "LO" and e.tag.element >= 0x1000)
    return {v for v in values if v and v != "None"}


def test_readme_main_job_leaves_nothing_of_the_sample_in_any_byte_or_name(tmp_path, tiny_model):
    out = tmp_path / "out" / "sample-anonymized"
    r = monai_anon("anonymize", "--sample", out, "--no-progress", "--model", tiny_model)
    assert r.returncode == 0, r.stderr
    images = len(list((sample_study() / "images").glob("*.dcm")))
    assert f"anonymize: {images} done, 0 refused, 0 failed, 1 skipped" in r.stdout, r.stdout
    assert "named by new UIDs" in r.stdout
    identifiers = sample_identifiers()
    assert len(identifiers) > 40  # the sample really carries identifiers to lose
    assert leaks(out, identifiers) == []
    outputs = sorted(p for p in out.rglob("*") if p.is_file())
    assert len(outputs) == images
    for path in outputs:
        ds = _read(path)
        name = path.relative_to(out).as_posix()
        assert name == f"{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm"
        assert ds.PatientIdentityRemoved == "YES" and ds.RecognizableVisualFeatures == "NO"  # a full anonymization


def _plant_dicom(src: Path, dst: Path) -> None:
    ds = _read(src)
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = CANARIES["name"], CANARIES["id"], CANARIES["birth"]
    ds.InstitutionName, ds.ImageComments = CANARIES["institution"], f"{CANARIES['comment']} {CANARIES['name']}"
    other = pydicom.Dataset()
    other.PatientID = CANARIES["other id"]
    ds.OtherPatientIDsSequence = [other]
    block = ds.private_block(0x0011, "CANARY CREATOR", create=True)
    block.add_new(0x01, "LO", CANARIES["private"])
    inner = pydicom.Dataset()
    inner.PatientID = CANARIES["private id"]
    block.add_new(0x02, "SQ", pydicom.Sequence([inner]))
    ds.file_meta.SourceApplicationEntityTitle = CANARIES["ae"]
    ds.preamble = CANARIES["preamble"].encode().ljust(128, b"\0")
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(dst))


def _plant_png(path: Path, pixels: np.ndarray) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", CANARIES["png text"])
    info.add_text("Comment", CANARIES["png ztxt"], zip=True)
    info.add_itxt("Description", CANARIES["png itxt"])
    exif = Image.Exif()
    exif[0x010E] = CANARIES["exif"]  # ImageDescription
    Image.fromarray(pixels.astype(np.uint16)).save(path, pnginfo=info, exif=exif)


def _plant_nifti(path: Path, pixels: np.ndarray) -> None:
    img = nib.Nifti1Image(pixels.T[:, :, None].astype(np.float32), np.diag([-1.0, -1.0, 1.0, 1.0]))
    for field, key in (("descrip", "descrip"), ("aux_file", "aux"), ("intent_name", "intent"), ("db_name", "db")):
        img.header[field] = CANARIES[key].encode()
    img.header.extensions.append(nib.nifti1.Nifti1Extension("comment", CANARIES["extension"].encode()))
    nib.save(img, str(path))


@pytest.fixture
def canary_study(tmp_path) -> Path:
    """A copy of the sample laid out as real archives are (patient/date folders), canaries in every place."""
    root = tmp_path / "archive"
    folder = root / CANARIES["folder"] / CANARIES["date folder"]
    sources = sorted((sample_study() / "images").glob("*.dcm"))[:4]
    for i, src in enumerate(sources):
        _plant_dicom(src, folder / f"{CANARIES['file']}_{i}.dcm")
    pixels = np.asarray(_read(sources[0]).pixel_array, dtype=np.float32)
    _plant_png(folder / f"{CANARIES['file']}.png", pixels)
    _plant_nifti(folder / f"{CANARIES['file']}.nii.gz", pixels)
    (folder / "notes.txt").write_text(f"{CANARIES['notes']} {CANARIES['name']}\n")
    return root


def test_canaries_planted_in_a_copy_of_the_sample_reach_no_output(canary_study, tmp_path, tiny_model):
    # the fixture really plants them (zTXt is compressed: read it back through PIL)
    planted = b"".join(_content(p) for p in canary_study.rglob("*") if p.is_file()).lower()
    names = "/".join(p.as_posix() for p in canary_study.rglob("*")).lower()
    with Image.open(next(canary_study.rglob("*.png"))) as im:
        texts = " ".join(im.text.values()) + str(dict(im.getexif()))
    missing = [k for k, v in CANARIES.items()
               if v.lower().encode() not in planted and v.lower() not in names and v not in texts]
    assert missing == []

    out, mapping = tmp_path / "out", tmp_path / "private" / "mapping.csv"
    r = monai_anon("anonymize", canary_study, out, "--no-progress", "--seed", "3", "--mapping-file", mapping,
                   "--model", tiny_model)
    assert r.returncode == 0, r.stderr
    assert "anonymize: 6 done, 0 refused, 0 failed, 1 skipped" in r.stdout, r.stdout
    assert leaks(out, CANARIES.values()) == []
    assert len([p for p in out.rglob("*") if p.is_file()]) == 6  # the notes are skipped, never copied
    # the mapping file, written where it was asked for, is what links each output back
    rows = list(csv.DictReader(mapping.open()))
    assert len(rows) == 6 and all(Path(row["output"]).is_file() and CANARIES["folder"] in row["source"]
                                  for row in rows)
    # the NIfTI and PNG outputs carry no free text at all
    (nifti,) = out.glob("*.nii.gz")
    header = nib.load(str(nifti)).header
    assert [bytes(header[f].tobytes()).strip(b"\0") for f in ("descrip", "aux_file", "intent_name", "db_name")] \
        == [b""] * 4 and len(header.extensions) == 0
    (png,) = out.glob("*.png")
    with Image.open(png) as im:
        assert im.text == {} and len(im.getexif()) == 0 and "exif" not in im.info
    assert b"tEXt" not in png.read_bytes() and b"eXIf" not in png.read_bytes()


def test_keep_names_mirrors_the_input_and_warns(canary_study, tmp_path, tiny_model):
    out = tmp_path / "out"
    r = monai_anon("anonymize", canary_study, out, "--no-progress", "--seed", "3", "--keep-names", "--model",
                   tiny_model)
    assert r.returncode == 0, r.stderr
    assert "--keep-names" in r.stderr and "may carry identifiers" in r.stderr
    expected = sorted(p.relative_to(canary_study).as_posix() for p in canary_study.rglob("*")
                      if p.is_file() and p.suffix != ".txt")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == expected
    # names are the user's choice here; headers and metadata are still clean
    needles = [v for k, v in CANARIES.items() if k not in ("folder", "date folder", "file")]
    assert leaks(out, needles) == []


def test_the_phi_fixture_goes_through_the_pixel_path(tmp_path, tiny_model):
    """The 40+ planted identifiers on DX radiographs, through ``anonymize`` (pixels through the model)."""
    src = tmp_path / "in" / "Quixote^Zebulon" / "20190304"
    uids: list[str] = []
    for visit in (0, 1):
        ds, planted = build_phi_radiograph(visit)
        src.mkdir(parents=True, exist_ok=True)
        ds.save_as(str(src / f"PID7731XQ_{visit}.dcm"), write_like_original=True)
        uids += planted
    out = tmp_path / "out"
    r = monai_anon("anonymize", tmp_path / "in", out, "--no-progress", "--seed", "1", "--model", tiny_model)
    assert r.returncode == 0, r.stderr
    assert "anonymize: 2 done, 0 refused, 0 failed, 0 skipped" in r.stdout, r.stdout
    assert leaks(out, (*PHI_TOKENS, *PHI_DATES, *uids)) == []
    for path in out.rglob("*.dcm"):
        ds = _read(path)
        before = _read(src / "PID7731XQ_0.dcm")
        assert ds.pixel_array.shape == before.pixel_array.shape
        assert not np.array_equal(ds.pixel_array, before.pixel_array)  # the pixels went through the model
        assert (ds.BurnedInAnnotation, ds.RecognizableVisualFeatures) == ("NO", "NO")


def test_a_single_dicom_file_and_counterfactual_markers(tmp_path, tiny_model):
    """The CLI's DICOM input path for one file (named as asked) and the markers of each pixel command."""
    source = sorted((sample_study() / "images").glob("*.dcm"))[0]
    runs = {
        "full.dcm": ("anonymize", "--seed", "2"),
        "residual.dcm": ("anonymize", "--seed", "2", "--mode", "residual"),
        "counterfactual.dcm": ("counterfactual", "--target", "nodule"),
        "headers.dcm": ("anonymize", "--headers-only"),
    }
    for name, (command, *options) in runs.items():
        r = monai_anon(command, source, tmp_path / name, *options, "--model", tiny_model)
        assert r.returncode == 0, (name, r.stderr)
        assert r.stdout.strip().splitlines()[-1].startswith(f"{command}: 1 done, 0 refused, 0 failed")
    read = {name: _read(tmp_path / name) for name in runs}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(runs)  # a single file goes where it was asked
    assert read["full.dcm"].RecognizableVisualFeatures == "NO"
    for name in ("residual.dcm", "counterfactual.dcm"):
        ds = read[name]
        assert ds.RecognizableVisualFeatures == "YES", name
        assert [i.CodeValue for i in ds.DeidentificationMethodCodeSequence] == ["113100"], name
    assert "class nodule" in read["counterfactual.dcm"].DerivationDescription
    assert "residual" in read["residual.dcm"].DerivationDescription
    assert "RecognizableVisualFeatures" not in read["headers.dcm"]
    assert read["headers.dcm"].PixelData == _read(source).PixelData
    for ds in read.values():
        assert ds.PatientIdentityRemoved == "YES" and str(ds.PatientID).startswith("ANON-")

