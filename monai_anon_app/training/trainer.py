"""Training loop of the disentanglement model (encoder, generator, heads, crop discriminator)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import SSIMLoss
from monai.utils import set_determinism
from torch.func import functional_call

from monai_anon_app.data.datasets import ImageSet, PatientBatchSampler
from monai_anon_app.data.transforms import jitter
from monai_anon_app.modelfolder.config import TrainConfig
from monai_anon_app.networks import DisentanglementModel, MLPHead, make_discriminator, split_medical
from monai_anon_app.training.distributed import (
    Ranks,
    all_gather_objects,
    average_gradients,
    average_values,
    broadcast_module,
    broadcast_tensors,
    current_ranks,
    rank_seed,
)
from monai_anon_app.training.finding_judge import fit_finding_judge, freeze, make_finding_judge
from monai_anon_app.training.losses import (
    hinge_d_loss,
    hinge_g_loss,
    mask_loss,
    random_crops,
    supervised_contrastive,
    swap_consistency,
    swap_targets,
    weighted_l1,
)

__all__ = ["CHECKPOINT", "TRACE_ENV", "DisentanglerTrainer", "StepLog", "check_resumable",
           "checkpoint_world_size"]

CHECKPOINT = "checkpoint.pt"
#: a folder: when set, every rank appends one JSON line per step to ``rank<R>.jsonl`` there (the indices of the
#: training patients its batch held, and checksums of the weights and of the finding judge), to check that
#: the ranks split each batch and keep identical weights (docs/scaling.md)
TRACE_ENV = "MONAI_ANON_TRAIN_TRACE"


@dataclass
class StepLog:
    step: int
    losses: dict[str, float]
    seconds: float


class DisentanglerTrainer:
    """Trains a :class:`DisentanglementModel` on an :class:`ImageSet`; checkpoints to ``out_dir``.

    ``train(on_step=...)`` runs until ``cfg.steps``; call it again after a restart to resume from the
    last checkpoint (model, optimisers, sampler and RNG states).

    Inside a torch process group (``ranks``, default: the initialised group, else one process) every rank
    trains on its share of each step's patients, gradients are averaged across ranks before every optimiser
    step, the weights start from rank 0's and the frozen finding judge is trained on rank 0 and broadcast;
    rank 0 alone writes the checkpoint (with every rank's random state: resume with as many processes).
    """

    def __init__(self, cfg: TrainConfig, data: ImageSet, out_dir: str | Path, device: str | None = None,
                 ranks: Ranks | None = None) -> None:
        self.ranks = ranks or current_ranks()
        self.cfg, self.data, self.out_dir = cfg, data, Path(out_dir)
        self.device = torch.device(device or self.ranks.device)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        set_determinism(cfg.seed)
        unknown = sorted(set(data.findings) - set(cfg.classes))
        if unknown:
            raise ValueError(f"findings {unknown} are not among the configured classes {cfg.classes}")
        self.patients = sorted(set(data.patient_ids))
        self.images = torch.from_numpy(data.images).unsqueeze(1).float()
        self.y = torch.tensor([cfg.classes.index(f) for f in data.findings])
        pindex = {p: i for i, p in enumerate(self.patients)}
        self.p = torch.tensor([pindex[p] for p in data.patient_ids])
        self.masks = (torch.from_numpy(data.masks).unsqueeze(1).float()
                      if cfg.use_masks and data.masks is not None else None)
        self.model = DisentanglementModel(cfg.model, len(cfg.classes), len(self.patients)).to(self.device)
        self.disc = make_discriminator(cfg.model.spatial_dims).to(self.device)
        # training-only adversaries (not part of the published model): patient embeddings of the kept slots
        self.identity_adversaries = (identity_adversaries(cfg).to(self.device) if cfg.weights.identity_leakage > 0
                                     else torch.nn.ModuleDict())
        self.trainable = [*self.model.parameters(), *self.identity_adversaries.parameters()]
        self.opt = torch.optim.Adam(self.trainable, lr=cfg.lr, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=cfg.lr_discriminator, betas=(0.5, 0.999))
        self.sched = torch.optim.lr_scheduler.OneCycleLR(self.opt, max_lr=cfg.lr, total_steps=max(cfg.steps, 2),
                                                         pct_start=0.05, anneal_strategy="cos")
        self.ssim = SSIMLoss(spatial_dims=cfg.model.spatial_dims, data_range=1.0, win_size=7)
        self.sampler = PatientBatchSampler(data.patient_ids, cfg.patients_per_batch, cfg.images_per_patient,
                                           seed=cfg.seed, rank=self.ranks.rank, world=self.ranks.world)
        self.gen = torch.Generator().manual_seed(rank_seed(cfg.seed, self.ranks.rank))
        self.step = 0
        self.batch = torch.zeros(0, dtype=torch.long)  # the last step's images (indices into ``data``)
        self.judge = freeze(make_finding_judge(cfg.model.image_size, len(cfg.classes), cfg.judge,
                                               cfg.model.spatial_dims)).to(self.device)
        if not self._resume():
            if self.ranks.main:
                self.judge = fit_finding_judge(self.images, self.y, len(cfg.classes), cfg.judge,
                                               torch.Generator().manual_seed(cfg.seed)).to(self.device)
            if self.ranks.distributed:  # one judge for all: rank 0's; and the same starting weights everywhere
                broadcast_module(self.judge)
                broadcast_module(self.model)
                broadcast_module(self.disc)
                broadcast_module(self.identity_adversaries)
        self._trace = Path(os.environ[TRACE_ENV]) if os.environ.get(TRACE_ENV) else None

    # -- checkpoints ------------------------------------------------------------------------------
    def _resume(self) -> bool:
        """Load the checkpoint if there is one; return whether there was."""
        path = self.out_dir / CHECKPOINT
        if not path.is_file():
            return False
        state = torch.load(path, map_location=self.device, weights_only=False)
        world = state.get("world_size", 1)
        check_resumable(path, world, self.ranks.world)
        rng = state["rank_rng"][self.ranks.rank] if world > 1 else state
        self.model.load_state_dict(state["model"])
        self.judge.load_state_dict(state["judge"])
        self.disc.load_state_dict(state["disc"])
        self.identity_adversaries.load_state_dict(state.get("identity_adversaries", {}))
        self.opt.load_state_dict(state["opt"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.sched.load_state_dict(state["sched"])
        self.sampler.rng.bit_generator.state = state["sampler_rng"]
        self.gen.set_state(rng["gen"].cpu())  # (map_location moved them to a rank's GPU)
        torch.set_rng_state(rng["torch_rng"].cpu())
        self.step = state["step"]
        return True

    def save_checkpoint(self) -> None:
        """Write ``out_dir/checkpoint.pt`` (rank 0); with several ranks every rank must call it (it gathers
        their random states)."""
        rng = {"gen": self.gen.get_state(), "torch_rng": torch.get_rng_state()}
        every_rank = all_gather_objects(rng) if self.ranks.distributed else None
        if not self.ranks.main:
            return
        state = {
            "model": self.model.state_dict(), "judge": self.judge.state_dict(), "disc": self.disc.state_dict(),
            "identity_adversaries": self.identity_adversaries.state_dict(), "opt": self.opt.state_dict(),
            "opt_d": self.opt_d.state_dict(), "sched": self.sched.state_dict(),
            "sampler_rng": self.sampler.rng.bit_generator.state, **rng, "step": self.step,
            "world_size": self.ranks.world,
        }
        if every_rank is not None:
            state["rank_rng"] = every_rank
        tmp = self.out_dir / (CHECKPOINT + ".tmp")
        torch.save(state, tmp)
        tmp.replace(self.out_dir / CHECKPOINT)

    # -- one step -----------------------------------------------------------------------------------
    @staticmethod
    def _partners(p: torch.Tensor) -> torch.Tensor:
        """For each image, the index of another image of the same patient in the batch (itself if none)."""
        same = (p[:, None] == p[None, :]).float()
        same.fill_diagonal_(0)
        has = same.sum(1) > 0
        # the next same-patient image in batch order, cyclically
        order = torch.arange(len(p), device=p.device)
        dist = (order[None, :] - order[:, None]) % len(p)
        dist = torch.where(same > 0, dist, torch.full_like(dist, len(p) + 1))
        return torch.where(has, dist.argmin(1), order)

    def _perms(self, p: torch.Tensor) -> dict[str, torch.Tensor]:
        """A donor per slot; the identity donor is another patient wherever the batch allows it."""
        b = p.shape[0]
        perms = {s: torch.randperm(b, generator=self.gen) for s in ("medical", "other")}
        ident = torch.randperm(b, generator=self.gen)
        same = p[ident] == p
        if same.any():
            ident = torch.roll(ident, shifts=self.cfg.images_per_patient)
        perms["identity"] = ident
        return perms

    def train_step(self) -> dict[str, float]:
        cfg, w, m = self.cfg, self.cfg.weights, self.model
        idx = torch.from_numpy(next(iter(self.sampler)))
        self.batch = idx
        x, y, p = self.images[idx].to(self.device), self.y[idx].to(self.device), self.p[idx].to(self.device)
        oracle = self.masks[idx].to(self.device) if self.masks is not None else None
        m.train()
        f = m.encoder(x)
        drawn = m.generator.render(f)
        emb = m.identity_embedding(f.identity)
        # cross-visit reconstruction: the identity grid of another visit of the same patient must do, so
        # everything that changes between visits (finding, acquisition) has to come from the other slots;
        # inside both visits' findings the L1 weighs ``finding_focus`` times more
        partner = self._partners(p)
        cross = m.generator(f.replace(identity=f.identity[partner]))
        where = oracle if oracle is not None else drawn.mask.detach()
        focus = 1 + w.finding_focus * torch.maximum(where, where[partner])
        losses = {
            "l1": weighted_l1(drawn.image, x, focus),
            "ssim": self.ssim(drawn.image.clamp(0, 1), x),
            "cross": weighted_l1(cross, x, focus) + self.ssim(cross.clamp(0, 1), x),
            "med": F.cross_entropy(m.medical_head(f.medical), y),
            "id": F.cross_entropy(m.identity_head(emb), p),
            "con": supervised_contrastive(emb, p),
            "sparse": split_medical(f.medical, cfg.model)[0].mean(),
            "leak": leakage_loss(m.finding_in_identity, m.identity_grid(f.identity), y)
            + leakage_loss(m.finding_in_other, f.other, y),
        }
        if oracle is not None:
            losses["mask"] = mask_loss(drawn.mask, oracle)
            if w.medical_mask > 0:
                losses["medical_mask"] = mask_loss(drawn.medical_mask, oracle)
        if len(self.identity_adversaries):
            losses["id_leak"] = sum(identity_leakage_loss(adversary, getattr(f, slot), p)
                                    for slot, adversary in self.identity_adversaries.items())
        swap_on = self.step >= cfg.swap_start
        if swap_on:
            ramp = min(1.0, (self.step - cfg.swap_start + 1) / max(1, cfg.swap_ramp))
            perms = self._perms(p)
            target = swap_targets(f, perms)
            mix = m.generator(target)
            # re-encode with the encoder's weights held fixed: the swap terms shape the generator only,
            # so the encoder cannot satisfy them by collapsing its vectors
            g = functional_call(m.encoder, {k: v.detach() for k, v in m.encoder.named_parameters()}, (mix,))
            swap = swap_consistency(g, target)
            losses.update({f"swap_{k[:3]}": v for k, v in swap.items()})
            losses["cyc"] = F.cross_entropy(m.identity_head(m.identity_embedding(g.identity)), p[perms["identity"]])
            # the finding of the mixed image is its medical donor's, as a frozen independent judge sees it
            losses["judge"] = F.cross_entropy(self.judge(jitter(mix, cfg.judge.shift, self.gen)), y[perms["medical"]])
        adv_on = w.adversarial > 0 and self.step >= cfg.adversarial_start
        crop = int(cfg.model.image_size * cfg.crop_fraction)
        fake = torch.cat([drawn.image, mix]) if swap_on else drawn.image
        if adv_on:
            losses["adv"] = hinge_g_loss(self.disc(random_crops(fake, crop, self.gen))[-1])
        total = (w.reconstruction * losses["l1"] + w.ssim * losses["ssim"] + w.cross_visit * losses["cross"]
                 + w.medical * losses["med"]
                 + w.identity * losses["id"] + w.contrastive * losses["con"]
                 + w.finding_sparsity * losses["sparse"] + w.leakage * losses["leak"])
        if oracle is not None:
            total = total + w.mask * losses["mask"] + w.medical_mask * losses.get("medical_mask", 0.0)
        if "id_leak" in losses:
            total = total + w.identity_leakage * losses["id_leak"]
        if adv_on:
            total = total + w.adversarial * losses["adv"]
        if swap_on:
            total = total + ramp * (w.swap * sum(swap.values()) + w.cycle * losses["cyc"] + w.judge * losses["judge"])
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        if self.ranks.distributed:
            average_gradients(self.trainable, self.sampler.fraction)
        torch.nn.utils.clip_grad_norm_(self.trainable, 5.0)
        self.opt.step()
        self.sched.step()
        if adv_on or (w.adversarial > 0 and self.step >= cfg.adversarial_start - 100):
            fake = fake.detach()
            real_logits = self.disc(random_crops(x, crop, self.gen))[-1]
            fake_logits = self.disc(random_crops(fake, crop, self.gen))[-1]
            d_loss = hinge_d_loss(real_logits, fake_logits)
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            if self.ranks.distributed:
                average_gradients(self.disc.parameters(), self.sampler.fraction)
            self.opt_d.step()
            losses["disc"] = d_loss
        self.step += 1
        values = {k: float(v.detach()) for k, v in losses.items()}
        if self.ranks.distributed:  # the global batch's losses, as one process would report them
            self._sync_buffers()
            values = average_values(values, self.sampler.fraction, self.ranks.device)
        return values

    def _sync_buffers(self) -> None:
        """Rank 0's buffers (running statistics, if a network has them) on every rank, as DDP keeps them."""
        buffers = [b for net in (self.model, self.disc) for b in net.buffers()]
        if buffers:
            broadcast_tensors(buffers)

    def _write_trace(self) -> None:
        """One line of ``TRACE_ENV``'s per-rank log: this step's patients (indices into the sorted training
        patients, never their IDs) and checksums of the weights."""
        with torch.no_grad():
            weights = float(sum(p.double().sum() for p in self.model.parameters()))
            judge = float(sum(p.double().sum() for p in self.judge.parameters()))
        line = {"step": self.step, "rank": self.ranks.rank, "world": self.ranks.world,
                "patients": sorted(set(self.p[self.batch].tolist())), "images": len(self.batch),
                "weights": weights, "judge": judge}
        self._trace.mkdir(parents=True, exist_ok=True)
        with open(self._trace / f"rank{self.ranks.rank}.jsonl", "a") as fh:
            fh.write(json.dumps(line) + "\n")

    def train(self, on_step: Callable[[StepLog], None] | None = None,
              should_stop: Callable[[], bool] | None = None) -> DisentanglementModel:
        """Run to ``cfg.steps`` (from a checkpoint if one exists); return the trained model."""
        while self.step < self.cfg.steps:
            if should_stop is not None and should_stop():
                break
            t0 = time.perf_counter()
            losses = self.train_step()
            if self._trace is not None:
                self._write_trace()
            if on_step is not None:
                on_step(StepLog(self.step, losses, time.perf_counter() - t0))
            if self.step % self.cfg.checkpoint_every == 0 or self.step == self.cfg.steps:
                self.save_checkpoint()
        self.model.eval()
        return self.model


def checkpoint_world_size(out_dir: str | Path) -> int | None:
    """How many processes wrote ``out_dir``'s checkpoint (``None`` when there is none)."""
    path = Path(out_dir) / CHECKPOINT
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=False).get("world_size", 1)


def check_resumable(path: Path, written_by: int, world: int) -> None:
    """``ValueError`` unless a checkpoint written by ``written_by`` processes can resume on ``world``."""
    if written_by != world:
        raise ValueError(f"{path} was written by a training on {written_by} process(es), this one runs on "
                         f"{world}: resume it with --nproc {written_by}, or train into a new folder")


def leakage_loss(adversary: torch.nn.Module, features: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The adversary learns to predict ``y`` from ``features`` (detached); the encoder, through a frozen
    copy of the adversary, learns to make that prediction uniform. (Maximising the adversary's error
    instead would let the encoder hide the finding in an inverted, still readable form.)"""
    fit = F.cross_entropy(adversary(features.detach()), y)
    frozen = {k: v.detach() for k, v in adversary.named_parameters()}
    logits = functional_call(adversary, frozen, (features,))
    uniform = -F.log_softmax(logits, 1).mean(1).mean() - torch.log(torch.tensor(float(logits.shape[1])))
    return fit + uniform


def identity_adversaries(cfg: TrainConfig, embedding_dim: int = 32) -> torch.nn.ModuleDict:
    """One patient-embedding adversary per slot an anonymized image keeps: ``medical`` and ``other``."""
    return torch.nn.ModuleDict({"medical": MLPHead(cfg.model.medical_dim, embedding_dim, hidden=128),
                                "other": MLPHead(cfg.model.other_dim, embedding_dim)})


def identity_leakage_loss(adversary: torch.nn.Module, features: torch.Tensor, patients: torch.Tensor,
                          temperature: float = 0.1) -> torch.Tensor:
    """The adversary learns to embed ``features (B, F)`` (detached) so that images of a patient lie together
    (:func:`supervised_contrastive`, ``patients (B,)``); the encoder, through a frozen copy, learns to make
    every other image of the batch equally similar to each one (a uniform softmax over the batch), so that
    nothing in ``features`` tells one patient from another. Needs several images per patient in a batch."""
    fit = supervised_contrastive(adversary(features.detach()), patients, temperature)
    frozen = {k: v.detach() for k, v in adversary.named_parameters()}
    z = F.normalize(functional_call(adversary, frozen, (features,)), dim=1)
    n = z.shape[0]
    others = ~torch.eye(n, dtype=torch.bool, device=z.device)
    log_prob = F.log_softmax((z @ z.t() / temperature).masked_fill(~others, -1e9), 1)
    uniform = -log_prob[others].mean() - torch.log(torch.tensor(float(max(n - 1, 1))))
    return fit + uniform


def encode_all(model: DisentanglementModel, images: np.ndarray, batch: int = 64) -> dict[str, torch.Tensor]:
    """Encode ``(N, S, S)`` images; returns ``medical``, ``identity``, ``other`` tensors ``(N, ·)``."""
    model.eval()
    out: dict[str, list[torch.Tensor]] = {"medical": [], "identity": [], "other": []}
    dev = next(model.parameters()).device
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = torch.from_numpy(images[i: i + batch]).unsqueeze(1).float().to(dev)
            f = model.encoder(x)
            for k in out:
                out[k].append(getattr(f, k).cpu())
    return {k: torch.cat(v) for k, v in out.items()}
