"""The shipped default model: loadable, its metrics belong to exactly these weights, and it anonymizes."""

from __future__ import annotations

import json

import numpy as np

from monai_anon_app.data.phantoms import Cohort
from monai_anon_app.inference import Anonymizer, resolve_model
from monai_anon_app.inference.registry import DEFAULT_MODEL


def test_shipped_metrics_describe_the_shipped_weights():
    folder = resolve_model(DEFAULT_MODEL)
    anon = Anonymizer.load(folder)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["model_checksum"] == anon.checksum
    assert metrics["image_size"] == anon.image_size
    # the model card quotes these figures; each target row must carry a measured value
    assert all(t["value"] is not None for t in metrics["targets"])
    assert sum(f.stat().st_size for f in folder.iterdir()) < 8 * 2**20
    assert not (folder / "checkpoint.pt").exists()


def test_shipped_model_anonymizes_a_new_phantom_away_from_its_source():
    anon = Anonymizer.load(resolve_model(DEFAULT_MODEL))
    case = next(iter(Cohort(1, 1, seed=424242)))
    image = case.image(96)
    result = anon.anonymize(image, seed=3)
    again = anon.anonymize(image, seed=3)
    assert result.image.shape == image.shape
    np.testing.assert_array_equal(result.image, again.image)
    assert not np.allclose(result.image, image, atol=0.05)
    assert result.identity_distance >= anon.threshold
