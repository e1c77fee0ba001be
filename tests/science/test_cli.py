"""The ``monai-anon`` command on a tiny cohort: phantoms, train, anonymize, counterfactual, bad input."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from monai_anon_app.cli import main
from monai_anon_app.imageio.formats import IMAGE_KINDS
from monai_anon_app.imageio.images import read_image


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """Run the real console entry point in a subprocess (exit code and streams as a user sees them)."""
    return subprocess.run([sys.executable, "-m", "monai_anon_app.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cohort")
    assert main(["phantoms", str(out / "png"), "--patients", "2", "--images-per-patient", "2", "--size", "48",
                 "--seed", "3", "--no-progress"]) == 0
    assert main(["phantoms", str(out / "nifti"), "--patients", "1", "--images-per-patient", "2", "--size", "40",
                 "--format", "nifti", "--no-progress"]) == 0
    return out


def test_phantoms_writes_labels_contract(cohort):
    rows = list(csv.DictReader((cohort / "png" / "labels.csv").open()))
    assert len(rows) == 4
    assert list(rows[0])[:3] == ["file", "patient_id", "finding"]
    assert all((cohort / "png" / r["file"]).is_file() for r in rows)


def test_anonymize_png_and_nifti_folders_mirror_formats(cohort, tiny_model, tmp_path):
    for fmt in ("png", "nifti"):
        out = tmp_path / fmt
        mapping = tmp_path / f"{fmt}-mapping.csv"
        r = run_cli("anonymize", cohort / fmt, out, "--model", tiny_model, "--seed", "5", "--no-progress",
                    "--mapping-file", mapping)
        assert r.returncode == 0, r.stderr
        images = len(list((cohort / fmt / "images").iterdir()))
        # every image done, none refused; labels.csv is not an image: skipped
        assert f"anonymize: {images} done, 0 refused, 0 failed, 1 skipped" in r.stdout, r.stdout
        assert not (out / "labels.csv").exists()  # never copied: it may carry identifiers
        # outputs are named by a keyed pseudonym, flat: nothing of the input path (folder, patient ID)
        written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
        assert len(written) == images and not [n for n in written if "/" in n or "PH" in n.upper()]
        pairs = {Path(row["source"]): Path(row["output"]) for row in csv.DictReader(mapping.open())}
        assert sorted(pairs) == sorted((cohort / fmt / "images").iterdir())  # the mapping file links them
        for src, dst in pairs.items():
            assert "".join(dst.suffixes) == "".join(src.suffixes) and dst.parent == out
            a, b = read_image(src), read_image(dst)
            assert a.pixels.shape == b.pixels.shape and not np.array_equal(a.pixels, b.pixels)
            if fmt == "nifti":
                assert np.allclose(nib.load(src).affine, nib.load(dst).affine)


def test_anonymize_same_seed_same_output(cohort, tiny_model, tmp_path):
    src = next((cohort / "png" / "images").iterdir())
    for name in ("a.png", "b.png"):
        assert run_cli("anonymize", src, tmp_path / name, "--model", tiny_model, "--seed", "9").returncode == 0
    assert np.array_equal(read_image(tmp_path / "a.png").pixels, read_image(tmp_path / "b.png").pixels)


def test_counterfactual_command(cohort, tiny_model, tmp_path):
    r = run_cli("counterfactual", cohort / "png" / "images", tmp_path / "cf", "--target", "nodule", "--model",
                tiny_model, "--no-progress")
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "cf").iterdir())) == 4
    bad = run_cli("counterfactual", cohort / "png" / "images", tmp_path / "cf2", "--target", "fracture", "--model",
                  tiny_model)
    assert bad.returncode != 0 and "unknown class 'fracture'" in bad.stderr
    assert not (tmp_path / "cf2").exists() or not any((tmp_path / "cf2").rglob("*.png"))


def _bad_inputs(root: Path) -> dict[str, tuple[Path, str]]:
    root.mkdir()
    (root / "notes.txt").write_text("not an image")
    (root / "fake.png").write_bytes(b"\x89PNG but not really")
    vol = nib.Nifti1Image(np.random.rand(8, 8, 8).astype(np.float32), np.eye(4))
    nib.save(vol, root / "volume.nii.gz")
    nan = np.random.rand(16, 16).astype(np.float32)
    nan[3, 3] = np.nan
    nib.save(nib.Nifti1Image(nan[:, :, None], np.eye(4)), root / "nan.nii.gz")
    (root / "empty").mkdir()
    return {
        "missing": (root / "missing.png", "does not exist"),
        "non-image": (root / "notes.txt", f"not a {IMAGE_KINDS}"),
        "corrupt": (root / "fake.png", "not a readable PNG"),
        "3d": (root / "volume.nii.gz", "only 2D images"),
        "nan": (root / "nan.nii.gz", "NaN"),
        "empty folder": (root / "empty", "holds no files"),
    }


@pytest.mark.parametrize("case", ["missing", "non-image", "corrupt", "3d", "nan", "empty folder"])
def test_bad_input_one_line_error_nonzero_exit_no_output(case, tiny_model, tmp_path):
    src, message = _bad_inputs(tmp_path / "in")[case]
    out = tmp_path / "out" / ("result.png" if src.suffix else "folder")
    r = run_cli("anonymize", src, out, "--model", tiny_model, "--seed", "1", "--no-progress")
    assert r.returncode != 0
    lines = [ln for ln in (r.stderr + r.stdout).strip().splitlines() if ln.strip()]
    assert any(message in ln for ln in lines), r.stderr
    assert "Traceback" not in r.stderr
    produced = [p for p in (tmp_path / "out").rglob("*") if p.is_file()] if (tmp_path / "out").exists() else []
    assert produced == []


def test_missing_model_is_one_line(cohort, tmp_path):
    r = run_cli("anonymize", cohort / "png" / "images", tmp_path / "o", "--model", tmp_path / "no-model")
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr
