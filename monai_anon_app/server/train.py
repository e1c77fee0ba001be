"""Train tasks over REST: the disentangler (everything) and the identity generator (VAE only).

MONAI Label runs ``POST /train/<name>`` in a subprocess that rebuilds the app and calls the task. Both
tasks read ``patient_id`` and ``finding`` from the datastore's image info, print one progress line per
step (``GET /train/`` shows the last lines), keep ``train_stats_<name>.json`` next to the published
models (``/info`` → ``train_stats``), train into a staging folder and publish it with
:meth:`ModelStore.publish`, which the infer tasks pick up at their next request.

The disentangler task takes MONAI Label's own multi-GPU options: ``multi_gpu`` trains on several processes with
torch DDP (the same path as ``monai-anon train --nproc N``), one per GPU that MONAI Label leaves visible (it sets
``CUDA_VISIBLE_DEVICES`` from ``gpus`` before the task runs), or ``processes`` processes on a machine without
CUDA (gloo on the CPU).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

import torch
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.train import TrainTask

from monai_anon_app.data.datasets import load_folder
from monai_anon_app.imageio.formats import sniff_format
from monai_anon_app.imageio.images import atomic_write
from monai_anon_app.imageio.itkio import detached_data_file
from monai_anon_app.modelfolder.config import TrainConfig, load_config
from monai_anon_app.server.datastore import training_records
from monai_anon_app.server.model_store import ModelStore
from monai_anon_app.server.params import IGNORED_KEYS, MAX_SEED, Option, parse_options
from monai_anon_app.server.request_errors import RequestError
from monai_anon_app.training.fit import CONFIG_DIR, retrain_identity_generator, train_model

__all__ = ["BUNDLED_CONFIGS", "TRAIN_TASKS", "DisentanglerTrainTask", "IdentityVAETrainTask", "ddp_processes"]

BUNDLED_CONFIGS = tuple(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
# keys MONAI Label itself puts into train requests (ignored unless a task declares them as options)
TRAIN_IGNORED = IGNORED_KEYS | {"gpus", "local_rank", "multi_gpu", "bundle_path", "dataset", "max_epochs",
                                "early_stop_patience", "pretrained", "name"}
GPUS = re.compile(r"all|\d+(,\d+)*")
#: most DDP processes a request may ask for on a machine without CUDA
MAX_CPU_PROCESSES = 64


class ModelTrainTask(TrainTask):
    """Shared plumbing: options, stats file, datastore records, publishing."""

    name: ClassVar[str]
    summary: ClassVar[str]
    options: ClassVar[tuple[Option, ...]]

    def __init__(self, store: ModelStore) -> None:
        super().__init__(self.summary)
        self.store = store

    def config(self) -> dict[str, Any]:
        return {o.name: o.default for o in self.options}

    def info(self) -> dict[str, Any]:
        return {**super().info(), "options": {o.name: o.describe() for o in self.options}}

    def parse(self, params: dict[str, Any]) -> dict[str, Any]:
        """Strict option parsing for the REST endpoint (MONAI Label's own keys are ignored unless they are options
        of this task)."""
        names = {o.name for o in self.options}
        options = parse_options(self.options, {k: v for k, v in params.items() if k in names or k not in TRAIN_IGNORED})
        if "gpus" in options and not GPUS.fullmatch(options["gpus"].replace(" ", "")):
            raise RequestError(422, f"option 'gpus' must be all or comma-separated GPU indices like 0,1, not "
                                    f"{options['gpus'][:40]!r}")
        return options

    @property
    def stats_file(self) -> Path:
        return self.store.root / f"train_stats_{self.name}.json"

    def stats(self) -> dict[str, Any]:
        try:
            return json.loads(self.stats_file.read_text())
        except (OSError, ValueError):
            return {}

    def _write_stats(self, stats: dict[str, Any]) -> None:
        self.store.root.mkdir(parents=True, exist_ok=True)
        atomic_write(self.stats_file, lambda tmp: Path(tmp).write_text(json.dumps(stats, indent=1)))

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        with contextlib.suppress(OSError):
            os.nice(10)  # leave the CPU to the server and its inference workers first
        names = {o.name for o in self.options}
        options = self.parse({k: v for k, v in request.items() if k in names})
        stats: dict[str, Any] = {"status": "RUNNING", "task": self.name, "start_ts": time.time(), "step": 0,
                                 "total_steps": None, "options": options}
        self._write_stats(stats)
        self.store.clean_staging(older_than_s=0)
        try:
            records, skipped = training_records(datastore)
            stats.update(images=len(records), skipped_images=len(skipped),
                         patients=len({p for _, p, _ in records}))
            print(f"{self.name}: {len(records)} labelled images of {stats['patients']} patients "
                  f"({len(skipped)} without patient_id/finding skipped)", flush=True)
            published = self.train(options, records, stats)
        except Exception as exc:
            stats.update(status="ERROR", error=str(exc) or exc.__class__.__name__, end_ts=time.time())
            self._write_stats(stats)
            print(f"{self.name}: error: {stats['error']}", flush=True)
            raise
        stats.update(status="DONE", published=published.name, checksum=self.store.checksum(), end_ts=time.time(),
                     seconds=round(time.time() - stats["start_ts"], 1))
        self._write_stats(stats)
        print(f"{self.name}: published {published.name} (checksum {stats['checksum'][:12]})", flush=True)
        return stats

    def progress(self, stats: dict[str, Any], step: int, total: int, losses: dict[str, float], every: int) -> None:
        stats.update(step=step, total_steps=total, losses={k: round(v, 5) for k, v in losses.items()})
        if step == total or step % every == 0:
            self._write_stats(stats)
            shown = " ".join(f"{k}={v:.4f}" for k, v in list(losses.items())[:5])
            print(f"{self.name}: step {step}/{total} {shown}", flush=True)

    def train(self, options: dict[str, Any], records: list[tuple[str, str, str]], stats: dict[str, Any]) -> Path:
        raise NotImplementedError


def _write_labels(records: list[tuple[str, str, str]], folder: Path) -> Path:
    """A ``labels.csv`` listing the records by absolute path (what ``load_folder`` reads)."""
    path = folder / "labels.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "patient_id", "finding"])
        w.writerows(records)
    return path


def _check_records(records: list[tuple[str, str, str]], classes: list[str]) -> None:
    if not records:
        raise RequestError(422, "no datastore image has patient_id and finding in its info; set them with "
                                "PUT /datastore/image/info")
    unknown = sorted({f for _, _, f in records} - set(classes))
    if unknown:
        raise RequestError(422, f"finding(s) {', '.join(unknown)} are not classes of the model "
                                f"({', '.join(classes)})")
    if len({p for _, p, _ in records}) < 3:
        raise RequestError(422, "training needs images of at least 3 patients (2 to train, 1 to calibrate)")
    detached = [Path(f).name for f, _, _ in records
                if (fmt := sniff_format(f)) in ("nrrd", "mha") and detached_data_file(f, fmt)]
    if detached:
        raise RequestError(422, f"{', '.join(detached[:5])}: headers whose pixels lie in another file; the server "
                                "reads single-file NRRD and MetaImage images only")


class DisentanglerTrainTask(ModelTrainTask):
    name = "disentangler"
    summary = ("Train the disentanglement model, case bank, identity generator and novelty threshold on the "
               "datastore images (patient_id and finding from image info), then publish the new model")
    options = (
        Option("steps", int, None, "disentangler steps (null = the model config's)", minimum=1, nullable=True),
        Option("vae_steps", int, None, "identity generator steps (null = the model config's)", minimum=1,
               nullable=True),
        Option("seed", int, None, "training seed (null = the model config's)", minimum=0, maximum=MAX_SEED,
               nullable=True),
        Option("config", str, None, "start from a bundled config instead of the served model's "
               f"({', '.join(BUNDLED_CONFIGS) or 'none bundled'})", choices=BUNDLED_CONFIGS, nullable=True),
        Option("multi_gpu", bool, False, "train on several processes with torch DDP (each step's patients split "
               "between them): one per GPU in gpus (NCCL), or `processes` on a machine without CUDA (gloo)"),
        Option("gpus", str, "all", "GPUs for multi_gpu: all, or comma-separated indices like 0,1 (MONAI Label "
               "limits CUDA_VISIBLE_DEVICES to them before the task runs)"),
        Option("processes", int, 2, "DDP processes for multi_gpu on a machine without CUDA (gloo on the CPU)",
               minimum=1, maximum=MAX_CPU_PROCESSES),
    )

    def base_config(self, name: str | None) -> TrainConfig:
        if name:
            return load_config(CONFIG_DIR / f"{name}.yaml")
        cfg = self.store.config()
        return cfg if cfg is not None else TrainConfig()

    def train(self, options: dict[str, Any], records: list[tuple[str, str, str]], stats: dict[str, Any]) -> Path:
        cfg = self.base_config(options["config"])
        for key in ("steps", "vae_steps", "seed"):
            if options[key] is not None:
                setattr(cfg, key, options[key])
        _check_records(records, list(cfg.classes))
        nproc = ddp_processes(options, torch.cuda.device_count() if torch.cuda.is_available() else 0)
        stats["processes"] = nproc
        if nproc > 1:
            print(f"{self.name}: training on {nproc} processes (torch DDP)", flush=True)
        staged = self.store.staging_dir()
        with tempfile.TemporaryDirectory(prefix="labels-", dir=self.store.root) as data_dir:
            _write_labels(records, Path(data_dir))
            cfg.data = data_dir
            every = max(1, cfg.steps // 20)
            train_model(cfg, staged, progress=False, nproc=nproc,
                        on_step=lambda log: self.progress(stats, log.step, cfg.steps, log.losses, every))
        cfg.data = None  # the published config must not point at a deleted folder
        cfg.save(staged / "config.yaml")
        return self.store.publish(staged)


def ddp_processes(options: dict[str, Any], cuda_devices: int) -> int:
    """How many training processes a request's ``multi_gpu``/``gpus``/``processes`` ask for on a machine with
    ``cuda_devices`` visible GPUs: 1 without ``multi_gpu``; else one per GPU (those of ``gpus`` when MONAI Label
    has not already narrowed the visible ones to them), or ``processes`` without CUDA."""
    if not options.get("multi_gpu"):
        return 1
    if cuda_devices:
        gpus = options.get("gpus") or "all"
        return cuda_devices if gpus == "all" else min(cuda_devices, len(gpus.split(",")))
    return options.get("processes") or 1


class IdentityVAETrainTask(ModelTrainTask):
    name = "identity_vae"
    summary = ("Retrain the identity generator and its novelty threshold for the served disentangler so that "
               "synthetic identities also stay away from the datastore's patients, then publish")
    options = (
        Option("vae_steps", int, None, "identity generator steps (null = the model config's)", minimum=1,
               nullable=True),
        Option("seed", int, None, "training seed (null = the model config's)", minimum=0, maximum=MAX_SEED,
               nullable=True),
    )

    def train(self, options: dict[str, Any], records: list[tuple[str, str, str]], stats: dict[str, Any]) -> Path:
        source = self.store.require()
        cfg = self.store.config()
        steps = options["vae_steps"] or cfg.vae_steps
        _check_records(records, list(cfg.classes))
        with tempfile.TemporaryDirectory(prefix="labels-", dir=self.store.root) as data_dir:
            _write_labels(records, Path(data_dir))
            data = load_folder(data_dir, cfg.model.image_size)
        every = max(1, steps // 20)
        staged = self.store.staging_dir()
        retrain_identity_generator(source, data, staged, steps=steps, seed=options["seed"],
                                   on_step=lambda s, losses: self.progress(stats, s + 1, steps, losses, every))
        return self.store.publish(staged)


TRAIN_TASKS: tuple[type[ModelTrainTask], ...] = (DisentanglerTrainTask, IdentityVAETrainTask)

