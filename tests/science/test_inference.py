"""The inference API on arrays, with a model trained end to end by the real trainer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_anon_app.data.io import InputError
from monai_anon_app.data.phantoms import Cohort
from monai_anon_app.inference import Anonymizer, ModelError


@pytest.fixture(scope="module")
def anonymizer(tiny_model) -> Anonymizer:
    return Anonymizer.load(tiny_model)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """A phantom at a size and intensity scale unlike the model's (100 px, 12-bit units)."""
    return Cohort(1, 1, seed=99).case(0, 0).image(100) * 4000 + 100


def test_anonymize_is_seeded_and_keeps_shape_and_units(anonymizer, image):
    a = anonymizer.anonymize(image, seed=7)
    b = anonymizer.anonymize(image, seed=7)
    c = anonymizer.anonymize(image, seed=8)
    assert a.image.shape == image.shape and a.image.dtype == np.float32
    assert np.array_equal(a.image, b.image)
    assert not np.array_equal(a.image, c.image)
    assert image.min() - 1 <= a.image.min() and a.image.max() <= image.max() + 1
    info = a.info()
    assert info["seed"] == 7 and info["model_checksum"] == anonymizer.checksum
    assert set(info["prediction_before"]["probabilities"]) == set(anonymizer.classes)


def test_random_seed_is_reported_and_reproduces(anonymizer, image):
    first = anonymizer.anonymize(image)
    again = anonymizer.anonymize(image, seed=first.seed)
    assert np.array_equal(first.image, again.image)


def test_synthetic_identities_respect_the_novelty_threshold(anonymizer):
    for seed in range(5):
        _, d_train, _ = anonymizer.synthetic_identity(seed)
        assert d_train >= anonymizer.threshold


def _copy_of(anonymizer, target: torch.Tensor) -> torch.Tensor:
    """An identity vector ``(1, I)`` whose embedding is (nearly) the training embedding ``target``."""
    best = torch.zeros(1, anonymizer.model.cfg.identity_dim, requires_grad=True)
    opt = torch.optim.Adam([best], lr=0.1)
    for _ in range(200):
        emb = anonymizer.model.identity_embedding(best)
        loss = (1 - torch.nn.functional.cosine_similarity(emb, target[None])).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    anonymizer.model.zero_grad(set_to_none=True)
    assert loss.item() < anonymizer.threshold
    return best.detach()


def test_candidates_near_a_training_identity_are_rejected(anonymizer):
    """If the identity generator could only produce a training patient, anonymization must refuse."""
    copy = _copy_of(anonymizer, anonymizer.bank.identities[0])

    class Copycat(torch.nn.Module):
        latent_dim = 1

        def sample(self, n, generator=None, temperature=1.0):
            return copy.expand(n, -1)

    original = anonymizer.vae
    anonymizer.vae = Copycat()
    try:
        with pytest.raises(ModelError, match="novelty check"):
            anonymizer.synthetic_identity(0, rounds=2)
    finally:
        anonymizer.vae = original


def test_sampling_widens_when_typical_identities_sit_on_training_patients(anonymizer):
    """Rounds after the first draw from a wider Gaussian, so a generator whose typical samples copy a
    training patient still yields a novel identity instead of failing."""
    copy = _copy_of(anonymizer, anonymizer.bank.identities[0])
    original, seen = anonymizer.vae, []

    class TypicalIsACopy(torch.nn.Module):
        latent_dim = original.latent_dim

        def sample(self, n, generator=None, temperature=1.0):
            seen.append(temperature)
            return copy.expand(n, -1) if temperature == 1.0 else original.sample(n, generator, temperature)

    anonymizer.vae = TypicalIsACopy()
    try:
        _, d_train, _ = anonymizer.synthetic_identity(0)
    finally:
        anonymizer.vae = original
    assert seen[0] == 1.0 and len(seen) > 1 and seen[1] > 1.0
    assert d_train >= anonymizer.threshold


def test_residual_mode_adds_the_change_to_the_original(anonymizer, image):
    full = anonymizer.counterfactual(image, target="nodule", mode="full")
    residual = anonymizer.counterfactual(image, target="nodule", mode="residual")
    assert full.image.shape == residual.image.shape == image.shape
    # residual mode keeps the original's fine detail: its error to the original is the model's change only
    rec = anonymizer.reconstruct(image)
    expected = image + (full.image - rec)
    assert np.allclose(residual.image, expected, atol=1e-2 * (image.max() - image.min()))


def test_counterfactual_towards_a_reference_image(anonymizer, image):
    ref = Cohort(1, 1, seed=98).case(0, 0).image(64)
    out = anonymizer.counterfactual(image, reference=ref)
    assert out.image.shape == image.shape and out.target in anonymizer.classes


def test_explain_returns_k_anonymized_cases(anonymizer, image):
    result = anonymizer.explain(image, k=3, seed=1)
    assert len(result.cases) == 3
    assert [c.distance for c in result.cases] == sorted(c.distance for c in result.cases)
    assert all(c.image.shape == image.shape for c in result.cases)
    assert result.prediction.label in anonymizer.classes


@pytest.mark.parametrize("bad, message", [
    (np.full((32, 32), np.nan), "NaN"),
    (np.zeros((4, 32, 32)), "2D"),
    (np.zeros((3, 3)), "at least 8"),
    (np.zeros((9000, 9)), "largest side"),
])
def test_bad_arrays_raise_input_errors(anonymizer, bad, message):
    with pytest.raises(InputError, match=message):
        anonymizer.anonymize(bad, seed=0)


def test_unknown_class_and_missing_model(anonymizer, image, tmp_path):
    with pytest.raises(InputError, match="unknown class"):
        anonymizer.counterfactual(image, target="fracture")
    with pytest.raises(ModelError, match="does not exist"):
        Anonymizer.load(tmp_path / "nope")
    (tmp_path / "partial").mkdir()
    with pytest.raises(ModelError, match="lacks"):
        Anonymizer.load(tmp_path / "partial")
