"""The app's settings, read from MONAI Label's ``--conf key value`` pairs (all values arrive as strings).

========================  =========================================================================
conf key                  meaning (default)
========================  =========================================================================
``model``                 model folder or name under ``models/`` (the shipped default model)
``published``             where training publishes new weights (``<app dir>/model/<model name>``)
``infer_workers``         inference worker processes (``min(2, CPUs)``; 0 runs inference in threads)
``infer_threads``         torch threads per worker (``CPUs // workers``, at least 1)
``max_pending``           requests queued for the workers before 503 busy (64)
``worker_nice``           CPU priority of the workers below the server's (0; 5–10 favours ``/info``)
``max_upload_mb``         largest upload accepted, in MiB (1024)
``max_unzip_mb``          largest uncompressed size of a zip of DICOM files sent to ``export``, in MiB (4096)
``tmp_dir``               folder for per-request temporary files (a fresh folder in the system temp)
``deid_key_file``         secret key for DICOM UIDs/dates in exports (``<app dir>/deid.key``, made once)
``labels_csv``            ``labels.csv`` whose ``patient_id``/``finding`` go into image info at start-up
========================  =========================================================================
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from monai_anon_app.inference import MAX_SIDE
from monai_anon_app.modelfolder.registry import resolve_model

__all__ = ["INLINE_RESULT_BYTES", "Runtime"]

#: results up to this size travel back from a worker in memory, never touching the server's disk
INLINE_RESULT_BYTES = 32 * 2**20


def _int(conf: dict, key: str, default: int, minimum: int = 0) -> int:
    raw = conf.get(key)
    if raw in (None, ""):
        return default
    try:
        value = int(str(raw))
    except ValueError:
        raise ValueError(f"--conf {key} must be an integer, not {raw!r}") from None
    if value < minimum:
        raise ValueError(f"--conf {key} must be at least {minimum}, not {value}")
    return value


@dataclass
class Runtime:
    """Resolved settings of one app instance (cheap to build: nothing is loaded)."""

    app_dir: Path
    model_base: Path
    publish_root: Path
    workers: int
    threads: int
    max_pending: int
    max_upload_bytes: int
    max_unzip_bytes: int
    tmp_root: Path
    key_file: Path
    labels_csv: Path | None
    niceness: int = 0
    max_side: int = MAX_SIDE

    @classmethod
    def from_conf(cls, app_dir: str | os.PathLike, conf: dict) -> Runtime:
        app_dir = Path(app_dir)
        base = resolve_model(conf.get("model") or None).resolve()
        publish = Path(conf["published"]) if conf.get("published") else app_dir / "model" / base.name
        cpus = os.cpu_count() or 1
        workers = _int(conf, "infer_workers", min(2, cpus))
        threads = _int(conf, "infer_threads", max(1, cpus // max(workers, 1)), minimum=1)
        default_tmp = Path(tempfile.gettempdir()) / f"monai-anon-{os.getuid()}"
        tmp = Path(conf["tmp_dir"]) if conf.get("tmp_dir") else default_tmp
        return cls(app_dir=app_dir, model_base=base, publish_root=publish.resolve(), workers=workers,
                   threads=threads, max_pending=_int(conf, "max_pending", 64, minimum=1),
                   max_upload_bytes=_int(conf, "max_upload_mb", 1024, minimum=1) * 2**20,
                   max_unzip_bytes=_int(conf, "max_unzip_mb", 4096, minimum=1) * 2**20, tmp_root=tmp,
                   key_file=Path(conf["deid_key_file"]) if conf.get("deid_key_file") else app_dir / "deid.key",
                   labels_csv=Path(conf["labels_csv"]) if conf.get("labels_csv") else None,
                   niceness=_int(conf, "worker_nice", 0))

    def request_dir(self) -> Path:
        """A fresh private folder for one request's files (the caller removes it)."""
        self.tmp_root.mkdir(parents=True, exist_ok=True, mode=0o700)
        return Path(tempfile.mkdtemp(prefix="req-", dir=self.tmp_root))
