"""The MONAI Label app: anonymization, counterfactuals, case explanations and DICOM export, plus training.

MONAI Label loads this file with ``--app <folder>`` and builds :class:`AnonymizationApp`; every training
subprocess builds it again, so ``__init__`` only reads settings (no model is loaded here: the infer tasks
load the served model on first use and reload it when training publishes new weights).

Start it with ``monai-anon serve`` (see ``docs/serving.md``), which also installs the non-blocking REST
layer of :mod:`monai_anon_app.server.rest`. Settings: ``--conf`` keys in :mod:`monai_anon_app.server.settings`.
"""

from __future__ import annotations

import logging
from typing import Any

from dicomweb_client.session_utils import create_session_from_user_pass
from fastapi import HTTPException
from monailabel.config import settings
from monailabel.datastore.dicom import DICOMwebClientX
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.train import TrainTask

from monai_anon_app import __version__
from monai_anon_app.server.datastore import AnonDICOMWebDatastore, make_local_datastore
from monai_anon_app.server.infer import INFER_TASKS, in_process_request
from monai_anon_app.server.model_store import ModelStore
from monai_anon_app.server.request_errors import RequestError
from monai_anon_app.server.settings import Runtime
from monai_anon_app.server.train import TRAIN_TASKS

logger = logging.getLogger(__name__)


class AnonymizationApp(MONAILabelApp):
    """Privacy-preserving case-based explanations served over MONAI Label's REST API."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        self.runtime = Runtime.from_conf(app_dir, conf or {})
        self.store = ModelStore(self.runtime.model_base, self.runtime.publish_root)
        super().__init__(app_dir=app_dir, studies=studies, conf=conf, name="monai-anon",
                         description="Disentanglement-based anonymization, counterfactuals and case-based "
                                     "explanations for 2D radiographs",
                         version=__version__)
        if not self.store.available():
            logger.warning("no complete model folder at %s: infer tasks answer 503 until one is trained "
                           "(POST /train/disentangler)", self.runtime.model_base)

    @property
    def dicomweb_url(self) -> str | None:
        return self.studies if self.studies.startswith(("http://", "https://")) else None

    def init_datastore(self) -> Datastore:
        if self.dicomweb_url:
            return self.init_remote_datastore()
        return make_local_datastore(self.studies, list(settings.MONAI_LABEL_DATASTORE_FILE_EXT),
                                    auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
                                    read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
                                    labels_csv=self.runtime.labels_csv)

    def init_remote_datastore(self) -> Datastore:
        self.studies = self.studies.rstrip("/").strip()
        user = settings.MONAI_LABEL_DATASTORE_USERNAME or settings.MONAI_LABEL_DICOMWEB_USERNAME
        password = settings.MONAI_LABEL_DATASTORE_PASSWORD or settings.MONAI_LABEL_DICOMWEB_PASSWORD
        session = create_session_from_user_pass(user, password) if user and password else None
        client = DICOMwebClientX(url=self.studies, session=session, qido_url_prefix=settings.MONAI_LABEL_QIDO_PREFIX,
                                 wado_url_prefix=settings.MONAI_LABEL_WADO_PREFIX,
                                 stow_url_prefix=settings.MONAI_LABEL_STOW_PREFIX)
        cache = settings.MONAI_LABEL_DATASTORE_CACHE_PATH or settings.MONAI_LABEL_DICOMWEB_CACHE_PATH
        return AnonDICOMWebDatastore(client, cache_path=cache.strip() or None)

    def init_infers(self) -> dict[str, InferTask]:
        return {cls.name: cls(self.store, self.runtime, self.dicomweb_url) for cls in INFER_TASKS}

    def init_trainers(self) -> dict[str, TrainTask]:
        return {cls.name: cls(self.store) for cls in TRAIN_TASKS}

    def infer(self, request: dict[str, Any], datastore: Datastore | None = None) -> dict[str, Any]:
        """MONAI Label's in-process inference (``monai-anon serve`` answers ``/infer`` without it): requests are
        checked and their image resolved first (:func:`~monai_anon_app.server.infer.in_process_request`), and
        refusals become HTTP errors with their status and sentence, which MONAI Label's endpoint passes on."""
        try:
            request = in_process_request(self._infers, request, datastore or self.datastore())
            return super().infer(request, datastore)
        except RequestError as exc:
            raise HTTPException(exc.status, exc.message) from None

    def info(self) -> dict[str, Any]:
        info = super().info()
        info["model"] = self.store.describe()
        return info
