"""Shapes of the networks and the behaviour of the disentanglement losses."""

from __future__ import annotations

import pytest
import torch

from monai_anon_app.networks import DisentanglementModel, DisentanglerConfig, Features, IdentityVAE
from monai_anon_app.training.losses import normalised_mse, supervised_contrastive, swap_consistency, swap_targets


@pytest.mark.parametrize("size", [64, 128])
def test_encoder_generator_shapes_2d(size):
    cfg = DisentanglerConfig(image_size=size, channels=(8, 8, 8), decoder_channels=(8, 8, 8))
    m = DisentanglementModel(cfg, n_classes=3, n_patients=5)
    x = torch.rand(2, 1, size, size)
    f = m.encoder(x)
    assert f.medical.shape == (2, cfg.medical_dim)
    assert f.identity.shape == (2, cfg.identity_dim) == (2, cfg.identity_channels * cfg.latent_size**2)
    assert f.other.shape == (2, cfg.other_dim)
    out, residual = m.generator(f, return_residual=True)
    assert out.shape == residual.shape == x.shape
    assert m.identity_embedding(f.identity).shape == (2, cfg.identity_embedding_dim)
    assert m.medical_head(f.medical).shape == (2, 3)


def test_spatial_dims_is_a_parameter():
    cfg = DisentanglerConfig(spatial_dims=3, image_size=16, latent_size=4, channels=(4, 4), decoder_channels=(4, 4),
                             norm=None)
    m = DisentanglementModel(cfg, n_classes=2, n_patients=3)
    x = torch.rand(1, 1, 16, 16, 16)
    assert m.generator(m.encoder(x)).shape == x.shape


def test_bad_image_size_is_refused():
    with pytest.raises(ValueError, match="power of two"):
        DisentanglerConfig(image_size=100)


def test_normalised_mse_is_scale_invariant_and_zero_on_match():
    t = torch.randn(16, 8)
    assert normalised_mse(t, t) == 0
    p = t + 0.1 * torch.randn(16, 8)
    assert torch.isclose(normalised_mse(p, t), normalised_mse(10 * p, 10 * t), rtol=1e-4)


def test_swap_consistency_asks_for_the_donor_vector_in_the_swapped_slot():
    """A generator that ignores the swap (re-encodes to the source's vectors) must be penalised."""
    g = torch.Generator().manual_seed(0)
    f = Features(torch.randn(8, 4, generator=g), torch.randn(8, 6, generator=g), torch.randn(8, 3, generator=g))
    perms = {"medical": torch.arange(8), "identity": torch.roll(torch.arange(8), 1), "other": torch.arange(8)}
    target = swap_targets(f, perms)
    assert torch.equal(target.identity, f.identity[perms["identity"]])
    faithful = swap_consistency(target, target)
    ignoring = swap_consistency(f, target)  # the identity came back as the source's
    assert all(v == 0 for v in faithful.values())
    assert ignoring["identity"] > 1.0 and ignoring["medical"] == 0 and ignoring["other"] == 0


def test_supervised_contrastive_prefers_grouped_embeddings():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    grouped = torch.nn.functional.one_hot(labels, 3).float() + 0.01 * torch.randn(6, 3)
    shuffled = grouped[torch.tensor([0, 2, 4, 1, 3, 5])]
    assert supervised_contrastive(grouped, labels) < supervised_contrastive(shuffled, labels)


def test_identity_vae_samples_have_identity_shape_and_are_seeded():
    vae = IdentityVAE(identity_dim=12, latent_dim=4)
    a = vae.sample(3, torch.Generator().manual_seed(1))
    b = vae.sample(3, torch.Generator().manual_seed(1))
    assert a.shape == (3, 12) and torch.equal(a, b)


def test_identity_vae_samples_from_the_gaussian_fitted_to_encoded_identities():
    torch.manual_seed(0)
    vae = IdentityVAE(identity_dim=12, latent_dim=3)
    identities = torch.randn(500, 12) * 4.0 + 10.0
    mu, _ = vae.encode(identities)
    vae.fit_prior(identities)
    assert torch.allclose(vae.prior_mean, mu.mean(0), atol=1e-5)
    torch.testing.assert_close(vae.prior_scale_tril @ vae.prior_scale_tril.T, torch.cov(mu.T), atol=1e-4, rtol=1e-3)
    # the latents sample() decodes follow that Gaussian, not N(0, I)
    g = torch.Generator().manual_seed(2)
    eps = torch.randn(4000, 3, generator=torch.Generator().manual_seed(2))
    z = vae.prior_mean + eps @ vae.prior_scale_tril.T
    torch.testing.assert_close(vae.sample(4000, g), vae.decode(z))
    assert (z.mean(0) - mu.mean(0)).abs().max() < 0.1 * mu.std(0).max()
    with pytest.raises(ValueError, match="at least 2"):
        vae.fit_prior(identities[:1])
