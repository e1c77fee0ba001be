"""Evaluation metrics on embeddings whose answer is known."""

from __future__ import annotations

import numpy as np

from monai_anon_app.evaluation.metrics import synthetic_identity_matches


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_synthetic_identities_that_copy_training_patients_match_more_often_than_new_patients():
    rng = np.random.default_rng(0)
    training = _unit(rng.normal(size=(200, 16)))
    real = _unit(rng.normal(size=(100, 16)))  # new patients: unrelated to the training ones
    copies = _unit(training[:100] + 0.05 * rng.normal(size=(100, 16)))  # synthetic = a training patient, nearly
    fresh = _unit(rng.normal(size=(100, 16)))  # synthetic, as new as a new patient
    # at a threshold every real probe passes, the one-to-one comparison cannot tell copies from new people
    loose = synthetic_identity_matches(copies, real, training, tau=-1.0, false_match_rate=0.05)
    assert loose["match_rate_minus_held_out"] == 0.0
    # at the search threshold (5 % of new real patients match someone) it can
    assert abs(loose["search_held_out_false_match_rate"] - 0.05) <= 0.01
    assert loose["search_match_rate"] == 1.0 and loose["search_match_rate_minus_held_out"] > 0.9
    new = synthetic_identity_matches(fresh, real, training, tau=-1.0, false_match_rate=0.05)
    assert new["search_match_rate_minus_held_out"] < 0.1
    assert new["nearest_training_similarity_median_synthetic"] < loose["nearest_training_similarity_median_synthetic"]
