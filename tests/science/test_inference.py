"""The inference API on arrays, with a model trained end to end by the real trainer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_anon_app.data.phantoms import Cohort
from monai_anon_app.data.transforms import from_model
from monai_anon_app.errors import InputError, ModelError
from monai_anon_app.inference import Anonymizer
from monai_anon_app.inference.anonymizer import redraw_weight


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


def test_reported_identity_distance_is_the_true_distance(anonymizer):
    """The distance an anonymization reports is recomputed here from the identity it returned."""
    for seed in range(3):
        ident, d_train, _ = anonymizer.synthetic_identity(seed)
        emb = anonymizer.model.identity_embedding(ident[None])
        true = 1 - torch.nn.functional.cosine_similarity(emb, anonymizer.bank.identities).max()
        assert abs(float(true) - d_train) < 1e-5


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

        def sample_with_typicality(self, n, generator=None, temperature=1.0):
            return copy.expand(n, -1), torch.zeros(n)

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

        def sample_with_typicality(self, n, generator=None, temperature=1.0):
            seen.append(temperature)
            if temperature == 1.0:
                return copy.expand(n, -1), torch.zeros(n)
            return original.sample_with_typicality(n, generator, temperature)

    anonymizer.vae = TypicalIsACopy()
    try:
        ident, _, _ = anonymizer.synthetic_identity(0)
    finally:
        anonymizer.vae = original
    assert seen[0] == 1.0 and len(seen) > 1 and seen[1] > 1.0
    assert not torch.allclose(ident, copy[0])


def test_the_most_typical_accepted_candidate_is_chosen(anonymizer):
    """Among candidates, a copy of a training patient is refused even when it is the most typical, and of
    the novel ones the more typical (smaller latent radius) wins over the farther one."""
    copy = _copy_of(anonymizer, anonymizer.bank.identities[0])
    novel = [anonymizer.synthetic_identity(seed)[0] for seed in (11, 12)]
    assert not torch.equal(novel[0], novel[1])
    candidates = torch.stack([copy[0], novel[0], novel[1]])
    radii = torch.tensor([0.1, 3.0, 1.0])

    class Fixed(torch.nn.Module):
        latent_dim = 1

        def sample_with_typicality(self, n, generator=None, temperature=1.0):
            return candidates, radii

    original, anonymizer.vae = anonymizer.vae, Fixed()
    try:
        ident, _, _ = anonymizer.synthetic_identity(0, candidates=3)
    finally:
        anonymizer.vae = original
    assert torch.equal(ident, novel[1])


def test_residual_mode_adds_the_change_to_the_original(anonymizer, image):
    full = anonymizer.counterfactual(image, target="nodule", mode="full")
    residual = anonymizer.counterfactual(image, target="nodule", mode="residual")
    assert full.image.shape == residual.image.shape == image.shape
    # residual mode keeps the original's fine detail: its error to the original is the model's change only,
    # except inside the source's own finding, where the model's image is taken
    rec = anonymizer.reconstruct(image)
    weight = from_model(redraw_weight(anonymizer.render_model(anonymizer.encode(image)).mask)[0],
                        0.0, 1.0, image.shape)
    expected = image + (full.image - rec) - weight * (image - rec)
    assert np.allclose(residual.image, expected, atol=1e-2 * (image.max() - image.min()))
    # anonymization keeps the finding: its residual mode is the plain sum
    anonymized = anonymizer.anonymize(image, seed=4, mode="full").image
    plain = image + (anonymized - rec)
    assert np.allclose(anonymizer.anonymize(image, seed=4, mode="residual").image, plain,
                       atol=1e-2 * (image.max() - image.min()))


def test_the_redraw_weight_covers_the_finding_and_one_pixel_around_it():
    mask = torch.zeros(1, 1, 8, 8)
    mask[0, 0, 3, 3], mask[0, 0, 6, 6] = 0.6, 0.2
    weight = redraw_weight(mask)[0, 0]
    assert torch.all(weight[2:5, 2:5] == 1.0)  # at full weight within a pixel of a cell at 0.5 or more
    assert torch.allclose(weight[5:8, 5:8], torch.tensor(0.4))  # a faint cell: a partial blend
    assert float(weight[0, 7]) == 0.0 and float(weight[:2].sum()) == 0.0


def test_counterfactual_towards_a_reference_image(anonymizer, image):
    ref = Cohort(1, 1, seed=98).case(0, 0).image(64)
    out = anonymizer.counterfactual(image, reference=ref)
    assert out.image.shape == image.shape and out.target in anonymizer.classes
    with pytest.raises(InputError, match="exactly one"):
        anonymizer.counterfactual_model(torch.zeros(1, 1, 64, 64))


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
