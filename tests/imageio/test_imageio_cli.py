"""``monai-anon anonymize`` / ``counterfactual`` on NRRD and MetaImage files: the same format out, named by the
keyed pseudonym, in the input's geometry, and nothing of the input header (a planted patient name) in it."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from imageio_testlib import (
    PHI_BYTES,
    geometry_of,
    itk,
    oblique_direction,
    plant_in_metaimage,
    smooth,
    write_slicer_nrrd,
    write_with_itk,
)

from monai_anon_app.defaults import ANONYMIZE_MODE, CANDIDATES
from monai_anon_app.imageio.images import read_image
from monai_anon_app.inference import Anonymizer

pytestmark = pytest.mark.filterwarnings("ignore:builtin type .* has no __module__:DeprecationWarning")  # ITK's SWIG


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "monai_anon_app.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=600)


def _inputs(folder: Path) -> list[Path]:
    """A Slicer-like NRRD slice, an ITK MetaImage slice and a detached NRRD header, named after the patient."""
    direction = oblique_direction()
    patient = folder / "DOE_JANE"
    return [
        write_slicer_nrrd(patient / "DOE_JANE_chest.nrrd", smooth((48, 40), -800.0, 1200.0), (0.7, 0.5),
                          (-10.0, 20.0, 5.0), direction),
        plant_in_metaimage(write_with_itk(patient / "DOE_JANE_2.mha", smooth((36, 44), 0.0, 3000.0, seed=1)[None],
                                          (0.4, 0.6, 1.0), (3.0, -4.0, 8.0), direction)),
        write_with_itk(patient / "detached" / "DOE_JANE_3.nhdr", smooth((40, 40), 0.0, 1.0, seed=2)[None],
                       (0.5, 0.5, 1.0), (0.0, 0.0, 0.0), direction),
    ]


def test_anonymize_keeps_the_format_and_geometry_and_drops_header_text(tiny_model, tmp_path):
    itk_ = itk()
    sources = _inputs(tmp_path / "in")
    out, mapping = tmp_path / "out", tmp_path / "mapping.csv"
    r = run_cli("anonymize", tmp_path / "in", out, "--model", tiny_model, "--seed", "5", "--no-progress",
                "--mapping-file", mapping)
    assert r.returncode == 0, r.stdout + r.stderr
    # the detached header's pixel file (DOE_JANE_3.raw) is not an image: skipped, never copied
    assert "anonymize: 3 done, 0 refused, 0 failed, 1 skipped" in r.stdout, r.stdout
    written = sorted(p.name for p in out.rglob("*") if p.is_file())
    assert len(written) == 3 and not [n for n in written if "DOE" in n.upper() or "JANE" in n.upper()], written
    assert sorted(Path(n).suffix for n in written) == [".mha", ".nhdr", ".nrrd"]
    pairs = {Path(row["source"]).name: Path(row["output"]) for row in csv.DictReader(mapping.open())}
    model = Anonymizer.load(tiny_model)
    for src in sources:
        dst = pairs[src.name]
        assert dst.suffix == src.suffix and dst.parent == out
        data = dst.read_bytes()
        assert not [phi for phi in PHI_BYTES if phi in data], dst.name
        if src.suffix == ".nhdr":
            assert b"data file" not in data  # one file: pixels inside
        a, b = read_image(src), read_image(dst)
        expected = model.anonymize(a.pixels, seed=5, candidates=CANDIDATES, mode=ANONYMIZE_MODE).image
        scale = float(np.ptp(a.pixels))
        np.testing.assert_allclose(b.pixels, expected, rtol=0, atol=1e-4 * scale)
        assert not np.allclose(b.pixels, a.pixels, atol=0.01 * scale)
        for got, want in zip(geometry_of(itk_.imread(str(dst))), geometry_of(itk_.imread(str(src)))):
            np.testing.assert_allclose(got, want, atol=1e-9)


def test_counterfactual_of_one_file_to_a_chosen_name(tiny_model, tmp_path):
    itk_ = itk()
    src = _inputs(tmp_path / "in")[0]
    target = Anonymizer.load(tiny_model).classes[-1]
    dst = tmp_path / "result.nrrd"
    r = run_cli("counterfactual", src, dst, "--target", target, "--model", tiny_model, "--no-progress")
    assert r.returncode == 0, r.stdout + r.stderr
    assert read_image(dst).pixels.shape == (48, 40) and not [phi for phi in PHI_BYTES if phi in dst.read_bytes()]
    for got, want in zip(geometry_of(itk_.imread(str(dst))), geometry_of(itk_.imread(str(src)))):
        np.testing.assert_allclose(got, want, atol=1e-9)
