"""The phantom cohort: determinism, independence of cohorts, and the oracles."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from monai_anon_app.data.cohort_writer import write_cohort
from monai_anon_app.data.phantoms import FINDINGS, Cohort, Finding
from monai_anon_app.imageio.images import read_image


def test_same_seed_same_images_other_seed_other_patients():
    a, b, c = Cohort(3, 2, seed=5), Cohort(3, 2, seed=5), Cohort(3, 2, seed=6)
    assert np.array_equal(a.case(1, 1).image(64), b.case(1, 1).image(64))
    assert a.identity(0) != c.identity(0)
    assert set(a.patient_id(i) for i in range(3)).isdisjoint(c.patient_id(i) for i in range(3))


def test_identity_fixed_per_patient_findings_vary_per_visit():
    cohort = Cohort(4, 12, seed=1)
    for i in range(4):
        assert len({cohort.case(i, v).identity for v in range(12)}) == 1
    kinds = {cohort.case(i, v).finding.kind for i in range(4) for v in range(12)}
    assert kinds == set(FINDINGS)


def test_counterfactual_oracle_changes_only_the_finding_region():
    cohort = Cohort(20, 3, seed=2)
    case = next(c for c in cohort if c.finding.kind == "normal")
    nodule = Finding("nodule", side=0, u=0.1, v=0.1, radius=0.08, strength=0.4)
    cf = case.with_finding(nodule)
    diff = np.abs(cf.image(128) - case.image(128))
    mask = cf.mask(128)
    assert diff.max() > 0.1
    assert diff[mask < 0.01].max() < 0.02  # only rounding/gamma tails outside the finding
    assert (diff * (mask > 0.01)).sum() / diff.sum() > 0.95


def test_identity_swap_oracle_keeps_finding_and_pose_changes_anatomy():
    cohort = Cohort(2, 1, seed=3)
    a, b = cohort.case(0, 0), cohort.case(1, 0)
    swapped = a.with_identity(b.identity)
    assert swapped.finding == a.finding and swapped.nuisance == a.nuisance
    assert np.abs(swapped.image(64) - a.image(64)).mean() > 0.02


def test_finding_region_contains_the_finding():
    cohort = Cohort(10, 3, seed=4)
    for case in cohort:
        if case.finding.kind != "normal":
            mask = case.mask(64) > 0.5
            assert (case.region(case.finding.kind, 64) | ~mask).all()


@pytest.mark.parametrize("fmt", ["png", "nifti"])
def test_write_cohort_labels_and_images(tmp_path, fmt):
    labels = write_cohort(tmp_path, Cohort(2, 2, seed=7), 32, fmt, progress=False)
    rows = list(csv.DictReader(labels.open()))
    assert [r["patient_id"] for r in rows] == ["PH000700000"] * 2 + ["PH000700001"] * 2
    assert {"file", "patient_id", "finding"} <= set(rows[0])
    img = read_image(tmp_path / rows[0]["file"])
    assert img.pixels.shape == (32, 32)
    expected = Cohort(2, 2, seed=7).case(0, 0).image(32)
    scale = 65535 if fmt == "png" else 1
    assert np.allclose(img.pixels / scale, expected, atol=1e-4)
