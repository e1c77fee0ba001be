"""``monai-anon deid`` and the option helpers shared with ``monai-anon anonymize``."""

from __future__ import annotations

import argparse
import csv
import stat
import warnings
from pathlib import Path

import pydicom
import pydicom.data
import pytest
from dicom_testlib import KEY

from monai_anon_app.cli.deid import options_from_args
from monai_anon_app.cli.parsers import add_deid_arguments

TEST_FILES = Path(pydicom.data.DATA_ROOT) / "test_files"


def _folder(root: Path) -> Path:
    (root / "a" / "b").mkdir(parents=True)
    for name, target in (("CT_small.dcm", "a/ct.dcm"), ("MR_small.dcm", "a/b/mr.dcm"), ("rtplan.dcm", "z_rtplan"),
                         ("dicomdirtests/DICOMDIR", "DICOMDIR")):
        (root / target).write_bytes((TEST_FILES / name).read_bytes())
    (root / "a" / "notes.txt").write_text("Patient John Doe, MRN 12345\n")
    (root / "a" / "labels.csv").write_text("file,patient_id\nct.dcm,12345\n")
    (root / "a" / "m_broken.dcm").write_bytes((TEST_FILES / "CT_small.dcm").read_bytes()[:600])
    return root


def test_single_file(tmp_path, cli):
    code, out, err = cli("deid", str(TEST_FILES / "CT_small.dcm"), str(tmp_path / "ct.dcm"), "--key", KEY)
    assert (code, out.strip(), err) == (0, "deid: 1 done, 0 skipped, 0 failed", "")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert pydicom.dcmread(str(tmp_path / "ct.dcm")).PatientIdentityRemoved == "YES"
    folder = tmp_path / "into"
    folder.mkdir()
    assert cli("deid", str(TEST_FILES / "CT_small.dcm"), str(folder), "--key", KEY)[0] == 0
    (written,) = [p for p in folder.rglob("*") if p.is_file()]  # into an existing folder: named by new UIDs
    assert written.relative_to(folder).as_posix() == _uid_name(written)


def _uid_name(path: Path) -> str:
    """``<StudyUID>/<SeriesUID>/<SOPUID>.dcm`` of the DICOM file ``path``, from its own (new) UIDs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    return f"{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm"


def test_folder_outputs_are_named_by_new_uids_and_a_bad_file_does_not_stop_the_batch(tmp_path, cli):
    src = _folder(tmp_path / "in")
    code, out, err = cli("deid", str(src), str(tmp_path / "out"), "--key", KEY, "--no-progress")
    assert code == 1  # something asked for was not done
    assert out.strip().splitlines()[-1] == "deid: 3 done, 3 skipped (2 not DICOM, 1 DICOMDIR), 1 failed"
    assert "named by new UIDs" in out
    assert err.count("failed: ") == 1 and "m_broken.dcm" in err and "truncated" in err
    outputs = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert len(outputs) == 3  # the rtplan processed after the failure; nothing else copied
    originals = {str(pydicom.dcmread(str(src / n), stop_before_pixels=True).SOPInstanceUID)
                 for n in ("a/ct.dcm", "a/b/mr.dcm", "z_rtplan")}
    for path in outputs:
        name = path.relative_to(tmp_path / "out").as_posix()
        assert name == _uid_name(path) and name.split("/")[-1][:-4] not in originals
        assert not {"a", "b", "ct", "mr", "z_rtplan"} & set(name.replace(".", "/").split("/"))


def test_keep_names_mirrors_the_input_with_a_warning(tmp_path, cli):
    src = _folder(tmp_path / "in")
    code, out, err = cli("deid", str(src), str(tmp_path / "out"), "--key", KEY, "--no-progress", "--keep-names")
    assert code == 1 and "--keep-names" in err and "may carry identifiers" in err
    assert "with the input's names" in out
    outputs = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert outputs == ["a/b/mr.dcm", "a/ct.dcm", "z_rtplan"]


def test_both_date_options_is_a_one_line_error(tmp_path, cli):
    code, _, err = cli("deid", str(TEST_FILES / "CT_small.dcm"), str(tmp_path / "x.dcm"),
                         "--retain-modified-dates", "--retain-full-dates")
    assert code == 2 and err.count("\n") == 1 and "exclude each other" in err
    assert not (tmp_path / "x.dcm").exists()


def test_a_single_non_dicom_file_is_an_error(tmp_path, cli):
    (tmp_path / "notes.txt").write_text("hello")
    code, _, err = cli("deid", str(tmp_path / "notes.txt"), str(tmp_path / "out.txt"))
    assert code == 2 and "not a DICOM file" in err and not (tmp_path / "out.txt").exists()


def test_output_inside_input_is_refused(tmp_path, cli):
    src = _folder(tmp_path / "in")
    code, _, err = cli("deid", str(src), str(src / "out"), "--key", KEY)
    assert code == 2 and "must not be the input folder or inside it" in err


def test_key_file_is_created_private_and_reused(tmp_path, cli):
    key_file = tmp_path / "secret" / "deid.key"
    for run in ("one.dcm", "two.dcm"):
        assert cli("deid", str(TEST_FILES / "CT_small.dcm"), str(tmp_path / run), "--key-file", str(key_file))[0] == 0
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and len(key_file.read_text().strip()) == 64
    assert (tmp_path / "one.dcm").read_bytes() == (tmp_path / "two.dcm").read_bytes()


def test_mapping_file_only_when_asked(tmp_path, cli):
    src = _folder(tmp_path / "in")
    cli("deid", str(src), str(tmp_path / "plain"), "--key", KEY, "--no-progress")
    assert not [p for p in (tmp_path / "plain").rglob("*") if p.suffix == ".csv"]
    mapping = tmp_path / "private" / "map.csv"
    cli("deid", str(src), str(tmp_path / "mapped"), "--key", KEY, "--mapping-file", str(mapping), "--no-progress")
    rows = list(csv.DictReader(mapping.open()))
    assert len(rows) == 3 and "1CT1" in {r["patient_id"] for r in rows}
    assert all(r["new_sop_uid"].startswith("2.25.") and r["sop_uid"] != r["new_sop_uid"] for r in rows)
    # the mapping file is what links each input to its output, named by its new UIDs
    for r in rows:
        out = Path(r["output"])
        assert out.is_file() and Path(r["source"]).is_relative_to(src)
        assert out.relative_to(tmp_path / "mapped").as_posix() == f"{r['new_study_uid']}/{r['new_series_uid']}/" \
            f"{r['new_sop_uid']}.dcm"
    assert stat.S_IMODE(mapping.stat().st_mode) == 0o600


def test_option_helpers_for_other_commands(tmp_path):
    parser = argparse.ArgumentParser()
    add_deid_arguments(parser)
    options = options_from_args(parser.parse_args(["--retain-modified-dates", "--clean-descriptors", "--key", KEY]))
    assert options.retain_modified_dates and options.clean_descriptors and not options.retain_uids
    assert options.key == KEY.encode()
    assert options_from_args(parser.parse_args([])).key != options_from_args(parser.parse_args([])).key  # random
    with pytest.raises(ValueError, match="exclude each other"):
        options_from_args(parser.parse_args(["--retain-modified-dates", "--retain-full-dates"]))
    with pytest.raises(SystemExit):
        parser.parse_args(["--key", "x" * 10, "--key-file", "f"])
