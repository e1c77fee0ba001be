"""Shapes of the networks and the behaviour of the disentanglement losses."""

from __future__ import annotations

import pytest
import torch

from monai_anon_app.modelfolder.config import FindingJudgeConfig
from monai_anon_app.networks import DisentanglementModel, DisentanglerConfig, Features, IdentityVAE, MLPHead, PoseHead
from monai_anon_app.training.finding_judge import freeze, make_finding_judge
from monai_anon_app.training.losses import (
    mask_loss,
    normalised_mse,
    supervised_contrastive,
    swap_consistency,
    swap_targets,
    weighted_l1,
)
from monai_anon_app.training.trainer import identity_leakage_loss, leakage_loss


@pytest.mark.parametrize("size", [64, 128])
def test_encoder_generator_shapes_2d(size):
    cfg = DisentanglerConfig(image_size=size, channels=(8, 8, 8), decoder_channels=(8, 8, 8))
    m = DisentanglementModel(cfg, n_classes=3, n_patients=5)
    x = torch.rand(2, 1, size, size)
    f = m.encoder(x)
    assert f.medical.shape == (2, cfg.medical_dim)
    assert f.identity.shape == (2, cfg.identity_dim) == (2, cfg.identity_channels * cfg.latent_size**2)
    assert f.other.shape == (2, cfg.other_dim)
    drawn = m.generator.render(f)
    assert drawn.image.shape == drawn.finding.shape == drawn.mask.shape == x.shape
    assert float(drawn.mask.min()) >= 0 and float(drawn.mask.max()) <= 1
    assert m.identity_embedding(f.identity).shape == (2, cfg.identity_embedding_dim)
    assert m.medical_head(f.medical).shape == (2, 3)


def test_spatial_dims_is_a_parameter():
    cfg = DisentanglerConfig(spatial_dims=3, image_size=16, latent_size=4, channels=(4, 4), decoder_channels=(4, 4),
                             norm=None)
    m = DisentanglementModel(cfg, n_classes=2, n_patients=3)
    x = torch.rand(1, 1, 16, 16, 16)
    assert m.generator(m.encoder(x)).shape == x.shape


def _model(seed: int = 0) -> tuple[DisentanglementModel, DisentanglerConfig]:
    torch.manual_seed(seed)
    cfg = DisentanglerConfig(image_size=64, channels=(8, 8), decoder_channels=(8, 8))
    return DisentanglementModel(cfg, n_classes=3, n_patients=4).eval(), cfg


def _with_mask(f: Features, cfg: DisentanglerConfig, cells: list[tuple[int, int]]) -> Features:
    mask = torch.zeros(f.medical.shape[0], cfg.finding_mask_size, cfg.finding_mask_size)
    for r, c in cells:
        mask[:, r, c] = 1.0
    appearance = torch.ones(f.medical.shape[0], cfg.appearance_dim)
    return f.replace(medical=torch.cat([mask.flatten(1), appearance], 1))


def test_the_finding_is_drawn_only_where_the_mask_is():
    """Swapping the medical vector changes the image only around the mask's cells (in the canonical frame,
    which at zero pose is the image frame), and an empty mask draws no finding at all."""
    m, cfg = _model()
    with torch.no_grad():
        f = m.encoder(torch.rand(2, 1, 64, 64))
        f = f.replace(other=torch.zeros_like(f.other))  # zero pose: canonical frame = image frame
        empty = m.generator.render(_with_mask(f, cfg, []))
        nodule = m.generator.render(_with_mask(f, cfg, [(5, 9)]))
    assert float(empty.finding.abs().max()) == 0
    change = (nodule.image - empty.image).abs()[:, 0]
    cell = 64 // cfg.finding_mask_size
    near = torch.zeros(64, 64, dtype=torch.bool)
    near[(5 - 1) * cell: (5 + 2) * cell, (9 - 1) * cell: (9 + 2) * cell] = True
    assert float(change[:, near].sum()) > 0
    assert float(change[:, ~near].max()) < 1e-6


def test_an_identity_swap_keeps_the_finding_layer_in_place():
    """The finding layer of an identity swap lies where the source's mask is, gated by the new lungs."""
    m, cfg = _model(1)
    with torch.no_grad():
        f = m.encoder(torch.rand(2, 1, 64, 64))
        f = _with_mask(f.replace(other=torch.zeros_like(f.other)), cfg, [(8, 4)])
        own = m.generator.render(f).mask
        swapped = m.generator.render(f.replace(identity=f.identity.flip(0))).mask
    assert torch.equal(own > 0, swapped > 0)


def test_the_medical_mask_is_what_the_medical_vector_holds_before_the_lung_gate():
    """``medical_mask`` shows the mask's cells even where the lung gate hides them from the drawn ``mask``
    (what an identity swap with other lungs would let through)."""
    m, cfg = _model(2)
    with torch.no_grad():
        f = m.encoder(torch.rand(2, 1, 64, 64))
        f = _with_mask(f.replace(other=torch.zeros_like(f.other)), cfg, [(6, 6)])
        open_gate = m.generator.render(f)
        m.generator.anatomy.blocks[-1].conv.bias[1].fill_(-60.0)  # lung field logits: the gate shuts
        shut = m.generator.render(f)
    cell = 64 // cfg.finding_mask_size
    centre = (slice(None), 0, 6 * cell + cell // 2, 6 * cell + cell // 2)
    assert float(open_gate.medical_mask[centre].min()) > 0.5  # (one cell, bilinearly upsampled)
    assert torch.all(open_gate.mask <= open_gate.medical_mask + 1e-6)
    assert float(shut.mask.max()) < 1e-3
    torch.testing.assert_close(shut.medical_mask, open_gate.medical_mask)


def test_the_pose_is_rigid_with_bounded_isotropic_scale():
    """No shear and no anisotropic scale: body shape cannot ride in the other vector."""
    cfg = DisentanglerConfig(other_dim=8)
    head = PoseHead(cfg)
    torch.nn.init.normal_(head.linear.weight, std=5.0)
    theta = head(torch.randn(64, 8))
    a = theta[..., :2]
    gram = a @ a.transpose(1, 2)
    scale2 = gram[:, 0, 0]
    torch.testing.assert_close(gram, scale2[:, None, None] * torch.eye(2).expand(64, 2, 2), atol=1e-5, rtol=1e-5)
    assert float(scale2.sqrt().max()) <= float(torch.exp(torch.tensor(head.max_log_scale))) + 1e-6
    assert float(theta[..., 2].abs().max()) <= head.max_shift + 1e-6
    assert torch.allclose(PoseHead(cfg)(torch.randn(3, 8)), torch.eye(2, 3).expand(3, 2, 3))


def test_leakage_loss_fits_the_adversary_and_pushes_features_towards_uniform():
    """The adversary's weights descend its fitting loss; the features' gradient makes its prediction less
    sure (the encoder hides the finding instead of inverting it)."""
    torch.manual_seed(0)
    adversary = torch.nn.Linear(4, 3)
    y = torch.tensor([0, 1, 2, 0])
    features = (torch.nn.functional.one_hot(y, 3).float() @ torch.randn(3, 4) * 3).requires_grad_(True)
    loss = leakage_loss(adversary, features, y)
    loss.backward()
    fit_before = torch.nn.functional.cross_entropy(adversary(features.detach()), y)
    with torch.no_grad():
        stepped = torch.nn.Linear(4, 3)
        stepped.weight.copy_(adversary.weight - 0.1 * adversary.weight.grad)
        stepped.bias.copy_(adversary.bias - 0.1 * adversary.bias.grad)
        moved = features - 0.5 * features.grad
    assert torch.nn.functional.cross_entropy(stepped(features.detach()), y) < fit_before

    def confidence(logits):
        return logits.softmax(1).amax(1).mean()

    with torch.no_grad():
        assert confidence(adversary(moved)) < confidence(adversary(features))


def test_identity_leakage_loss_fits_the_adversary_and_makes_patients_indistinct():
    """The adversary's weights descend its contrastive fit; the features' gradient brings the patients it
    told apart closer together (in its frozen embedding), rather than inverting what tells them apart."""
    torch.manual_seed(0)
    adversary = MLPHead(4, 8, hidden=16)
    patients = torch.arange(4).repeat_interleave(3)
    features = (torch.nn.functional.one_hot(patients, 4).float() @ torch.randn(4, 4) * 2
                + 0.1 * torch.randn(12, 4)).requires_grad_(True)
    identity_leakage_loss(adversary, features, patients).backward()
    fit_before = supervised_contrastive(adversary(features.detach()), patients)
    stepped = MLPHead(4, 8, hidden=16)
    with torch.no_grad():
        for mine, theirs in zip(stepped.parameters(), adversary.parameters(), strict=True):
            mine.copy_(theirs - 0.05 * theirs.grad)
        moved = features - 0.5 * features.grad
    assert supervised_contrastive(stepped(features.detach()), patients) < fit_before

    def separation(x):  # mean cosine similarity to the same patient's images minus to the others'
        z = torch.nn.functional.normalize(adversary(x), dim=1)
        sim = z @ z.t()
        same = patients[:, None] == patients[None, :]
        off = ~torch.eye(12, dtype=torch.bool)
        return sim[same & off].mean() - sim[~same].mean()

    with torch.no_grad():
        assert separation(moved) < separation(features) - 0.01


def test_a_frozen_judge_passes_gradients_to_images_not_to_itself():
    judge = freeze(make_finding_judge(64, 3, FindingJudgeConfig(channels=(8, 8))))
    image = torch.rand(2, 1, 64, 64, requires_grad=True)
    torch.nn.functional.cross_entropy(judge(image), torch.tensor([1, 2])).backward()
    assert image.grad is not None and float(image.grad.abs().sum()) > 0
    assert all(p.grad is None and not p.requires_grad for p in judge.parameters())
    assert not judge.training


def test_mask_loss_and_focus_weighting():
    truth = torch.zeros(2, 1, 16, 16)
    truth[:, :, 4:8, 4:8] = 1
    assert mask_loss(truth, truth) < mask_loss(torch.zeros_like(truth), truth) - 0.5
    assert mask_loss(truth.roll(6, -1), truth) > mask_loss(truth, truth) + 0.5
    # an error inside the focus region weighs more than the same error outside it
    target = torch.zeros(1, 1, 16, 16)
    inside, outside = target.clone(), target.clone()
    inside[..., 5, 5], outside[..., 12, 12] = 1.0, 1.0
    focus = 1 + 10 * truth[:1]
    assert weighted_l1(inside, target, focus) > 5 * weighted_l1(outside, target, focus)


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
    _, radius = vae.sample_with_typicality(2000, torch.Generator().manual_seed(1), temperature=2.0)
    # the radius is the latent's distance from the centre in units of the sampling Gaussian
    assert abs(float(radius.pow(2).mean()) - 4.0 * 4) < 0.6


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
