"""The module's Logic: everything but the GUI, against MRML (``slicer``, ``vtk``) and never Qt.

Threading rule: only the main thread touches MRML. Network calls run in :class:`~CaseAnonymizerLib.jobs.Job`
worker threads that receive bytes and return bytes/JSON; the main thread prepares uploads before a job starts
and turns results into nodes after it ends (:meth:`Operation.complete`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import slicer
import vtk
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic

from .client import InferResponse, ServerClient, ServerInfo, Upload
from .dicom_files import dicom_upload, dicom_zip_upload, extract_zip
from .errors import CancelledError, ConsentRequiredError, InputError, LoginRequiredError, ServerFailedError
from .export_plan import ExportPlan
from .i18n import tr as _
from .identities import new_pseudonym, new_seed
from .jobs import Job
from .login import TokenStore
from .operations import Operation, Outcome
from .parameters import Parameters
from .settings import ConsentStore, SettingsBackend, UrlHistory
from .summaries import summarize
from .urls import is_loopback, normalize_server_url
from .views import COMPARE_LAYOUT_ID, EXPLAIN_LAYOUT_ID, VIEW_GROUP, VIEWS, difference_window, layout_xml
from .window_level import WindowLevelLink

__all__ = ["IDENTITY_ATTRIBUTE", "OUTPUT_ATTRIBUTE", "CaseAnonymizerLogic"]

OUTPUT_ATTRIBUTE = "CaseAnonymizer.Output"  # on every node and subject hierarchy item this module creates
IDENTITY_ATTRIBUTE = "CaseAnonymizer.IdentityRemoved"


def _import_into_dicom_database(folder: str, copyFiles: bool) -> None:
    """Import a folder into Slicer's DICOM database (desktop Slicer only)."""
    try:
        from DICOMLib import DICOMUtils
    except ImportError as exc:
        raise InputError(_("Slicer's DICOM database is not available in this Slicer."), str(exc)) from exc
    if getattr(slicer, "dicomDatabase", None) is None or not slicer.dicomDatabase.isOpen:
        raise InputError(_("Slicer's DICOM database is not open; open the DICOM module once and try again."))
    DICOMUtils.importDicom(folder, copyFiles=copyFiles)


class CaseAnonymizerLogic(ScriptedLoadableModuleLogic):
    """Everything but the GUI: talks to the server, turns answers into nodes, manages views and consent.

    Methods named ``start*`` run on the main thread and return an :class:`Operation` whose network part
    runs in the background; ``anonymize``/``counterfactual``/``explain``/``export`` are blocking
    conveniences for scripts and tests.
    """

    #: Makes the settings store when the constructor gets none. ``CaseAnonymizer.py`` sets it to ``qt.QSettings``
    #: (Slicer's persistent settings); this package does not import Qt.
    settingsFactory: ClassVar[Callable[[], SettingsBackend] | None] = None

    def __init__(
        self, settings: SettingsBackend | None = None, clientFactory: Callable[..., ServerClient] | None = None
    ) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        if settings is None:
            factory = CaseAnonymizerLogic.settingsFactory
            if factory is None:
                raise RuntimeError("No settings store: pass settings, or load the CaseAnonymizer module first.")
            settings = factory()
        self.settings = settings
        self.urlHistory = UrlHistory(self.settings)
        self.consent = ConsentStore(self.settings)
        self.tokens = TokenStore()  # in memory only: never written to the settings
        self.clientFactory = clientFactory or ServerClient
        #: ``importer(folder, copyFiles)`` used for "export into Slicer's DICOM database".
        self.dicomImporter: Callable[[str, bool], None] = _import_into_dicom_database
        self.serverInfo: ServerInfo | None = None
        self.windowLevelLink = WindowLevelLink()
        self._sourceFilesCache: tuple[Any, list[str]] = (None, [])

    # -- parameters ---------------------------------------------------------------------------------
    def parameters(self) -> Parameters:
        """Typed access to the module's parameter node (created with defaults when missing)."""
        params = Parameters(self.getParameterNode())
        params.set_defaults()
        return params

    # -- connection -----------------------------------------------------------------------------------
    def makeClient(self, url: str | None = None) -> ServerClient:
        """A client for ``url`` (the parameter node's server by default) carrying this session's login to it;
        :class:`LoginRequiredError` when that login has expired (the user is asked again)."""
        params = self.parameters()
        url = url or params.serverUrl
        token = self.tokens.get(url)
        if token is not None and token.expired():
            self.tokens.forget(url)
            raise LoginRequiredError(_("The login of {user} to {url} has expired; log in again.").format(
                user=token.username, url=normalize_server_url(url)), 401)
        return self.clientFactory(url, read_timeout=float(params.timeoutSeconds), verify=params.caBundle or True,
                                  token=token)

    # -- login (servers with token auth) ------------------------------------------------------------------
    def startLogin(self, username: str, password: str, url: str | None = None) -> Operation:
        """Log in to the server in the background (user name + password → the server's token endpoint), then
        check the connection with the new token. The token is kept in memory for this session only; the
        password is not kept at all."""
        url = url or self.parameters().serverUrl
        self.tokens.forget(url)
        client = self.makeClient(url)

        def work(progress: Any) -> tuple[Any, ServerInfo]:
            progress(_("Logging in to {url}").format(url=client.url), None)
            try:
                token = client.login(username, password)
                return token, client.info()
            finally:
                client.close()

        def finish(answer: tuple[Any, ServerInfo]) -> Outcome:
            token, info = answer
            if token is not None:
                self.tokens.put(url, token)
            self.serverInfo = info
            self.urlHistory.add(info.url)
            summary = (_("Logged in to {url} as {user}.").format(url=info.url, user=token.username) if token else
                       _("{url} does not ask for a login.").format(url=info.url))
            return Outcome("connect", info.raw, f"{summary} {info.summary()}")

        return Operation("login", Job(work, "login").start(), finish)

    def login(self, username: str, password: str, url: str | None = None, timeout: float | None = None) -> ServerInfo:
        """Blocking login (scripts, tests)."""
        self.runOperation(self.startLogin(username, password, url), timeout)
        assert self.serverInfo is not None
        return self.serverInfo

    def loggedInAs(self, url: str | None = None) -> str | None:
        """The user name of this session's login to ``url``, if any."""
        token = self.tokens.get(url or self.parameters().serverUrl)
        return token.username if token is not None else None

    def logout(self, url: str | None = None) -> None:
        """Forget the login to ``url`` (the token goes; nothing was stored elsewhere)."""
        self.tokens.forget(url or self.parameters().serverUrl)

    def startCheckConnection(self, url: str | None = None) -> Operation:
        """``GET /info/`` in the background; on success the URL goes first in the history."""
        client = self.makeClient(url)

        def work(progress: Any) -> ServerInfo:
            progress(_("Connecting to {url}").format(url=client.url), None)
            try:
                return client.info()
            finally:
                client.close()

        def finish(info: ServerInfo) -> Outcome:
            self.serverInfo = info
            self.urlHistory.add(info.url)
            missing = info.missing_models()
            warnings = []
            if missing:
                warnings.append(_("The server lacks the model(s): {names}.").format(names=", ".join(missing)))
            return Outcome("connect", info.raw, info.summary(), warnings=warnings)

        return Operation("connect", Job(work, "connect").start(), finish)

    def checkConnection(self, url: str | None = None, timeout: float | None = None) -> ServerInfo:
        """Blocking connection check (scripts, tests)."""
        self.runOperation(self.startCheckConnection(url), timeout)
        assert self.serverInfo is not None
        return self.serverInfo

    def defaultTarget(self, classes: list[str]) -> str:
        """The counterfactual target to offer among ``classes``: the current one when the model knows it, else
        the first class other than ``normal``."""
        current = self.parameters().target
        if current in classes:
            return current
        return next((c for c in classes if c != "normal"), classes[0] if classes else "")

    # -- consent ----------------------------------------------------------------------------------------
    def needsConsent(self, url: str | None = None) -> bool:
        return not self.consent.has_consent(url or self.parameters().serverUrl)

    def grantConsent(self, url: str | None = None, remember: bool = False) -> None:
        self.consent.grant(url or self.parameters().serverUrl, remember)

    def revokeConsent(self, url: str | None = None) -> None:
        self.consent.revoke(url or self.parameters().serverUrl)

    def consentText(self, url: str | None = None) -> str:
        """What the user agrees to: which image goes where, over which kind of connection."""
        url = normalize_server_url(url or self.parameters().serverUrl)
        text = _("The image you selected will be sent to the server at {url} to be processed there. For an "
                 "anonymized preview or an export of an image loaded from Slicer's DICOM database, its DICOM "
                 "file(s) are sent, patient data in the headers included: the server needs them to give each "
                 "patient one synthetic identity and to de-identify the export. The server is meant to delete "
                 "everything after answering, but it is outside Slicer's control.").format(url=url)
        if url.startswith("http://") and not is_loopback(url):
            text += "\n\n" + _("Warning: this connection is not encrypted (http). Anyone on the network path can "
                               "read the image. Prefer an https:// address.")
        elif is_loopback(url):
            text += "\n\n" + _("This server runs on this computer: the image does not cross a network.")
        return text + "\n\n" + _("Send images to this server?")

    def _requireConsent(self, url: str) -> None:
        if self.needsConsent(url):
            raise ConsentRequiredError(
                _("Images are not sent to {url} until you agree to it.").format(url=normalize_server_url(url)))

    # -- inputs (main thread) ---------------------------------------------------------------------------
    def selectDefaultInput(self) -> None:
        """Without an input, take the scene's first scalar volume unless it is a label map or an output of this
        module."""
        params = self.parameters()
        if params.inputVolume is not None:
            return
        first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
        if first is None or first.GetAttribute(OUTPUT_ATTRIBUTE) == "1" or first.IsA("vtkMRMLLabelMapVolumeNode"):
            return
        params.inputVolume = first

    def validateInput(self, volumeNode: Any) -> None:
        """Raise :class:`InputError` (one sentence) when ``volumeNode`` cannot be sent."""
        if volumeNode is None:
            raise InputError(_("Select an input volume first."))
        if not volumeNode.IsA("vtkMRMLScalarVolumeNode") or volumeNode.IsA("vtkMRMLLabelMapVolumeNode"):
            raise InputError(_("The input must be a scalar image volume, not a label map or other data."))
        imageData = volumeNode.GetImageData()
        if imageData is None or min(imageData.GetDimensions()) < 1 or imageData.GetNumberOfPoints() == 0:
            raise InputError(_("The input volume '{name}' holds no image.").format(name=volumeNode.GetName()))
        if volumeNode.IsA("vtkMRMLVectorVolumeNode") or imageData.GetNumberOfScalarComponents() != 1:
            raise InputError(_("The input has colour channels; convert it to a scalar (grey) volume first, "
                               "e.g. with the Vector to Scalar Volume module."))

    def sourceDicomFiles(self, volumeNode: Any, fresh: bool = False) -> list[str]:
        """The DICOM files the volume was loaded from (via Slicer's DICOM database), or [] if none."""
        if volumeNode is None:
            return []
        text = volumeNode.GetAttribute("DICOM.instanceUIDs") or ""
        database = getattr(slicer, "dicomDatabase", None)
        if not text or database is None:
            return []
        key = (volumeNode.GetID(), text, id(database))
        if fresh or self._sourceFilesCache[0] != key:  # the panel asks often; a CT series has hundreds of files
            files = [database.fileForInstance(uid) for uid in text.split()]
            self._sourceFilesCache = (key, [f for f in files if f and os.path.isfile(f)])
        return list(self._sourceFilesCache[1])

    def describeInput(self, volumeNode: Any) -> str:
        """One line about the input for the panel (size, DICOM or not, what export can do)."""
        if volumeNode is None or volumeNode.GetImageData() is None:
            return ""
        dims = volumeNode.GetImageData().GetDimensions()
        size = f"{dims[0]} x {dims[1]}" + (f" x {dims[2]}" if dims[2] > 1 else "")
        files = self.sourceDicomFiles(volumeNode)
        if files:
            return _("{size} pixels; DICOM series of {n} file(s): export available.").format(size=size, n=len(files))
        return _("{size} pixels; not loaded from Slicer's DICOM database: preview only (export needs a DICOM "
                 "series).").format(size=size)

    def _temporaryDirectory(self) -> str:
        base = os.path.join(slicer.app.temporaryPath, "CaseAnonymizer")
        os.makedirs(base, exist_ok=True)
        return tempfile.mkdtemp(dir=base)

    def prepareUpload(self, volumeNode: Any) -> Upload:
        """The volume as a NIfTI upload (geometry and intensity units kept). No copy stays on disk."""
        self.validateInput(volumeNode)
        folder = self._temporaryDirectory()
        try:
            path = os.path.join(folder, "image.nii.gz")
            storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
            storage.SetFileName(path)
            storage.SetUseCompression(True)
            if not storage.WriteData(volumeNode) or not os.path.isfile(path):
                raise InputError(_("The input volume could not be converted for sending."))
            with open(path, "rb") as f:
                data = f.read()
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return Upload("image.nii.gz", data, "application/gzip")

    def previewUpload(self, volumeNode: Any) -> Upload:
        """What *Anonymize* sends: the volume's own DICOM file when it was loaded from exactly one, so that the
        server knows the patient and gives the preview the synthetic identity that the export gives the same
        image (one per patient and seed); otherwise the volume as NIfTI (:meth:`prepareUpload`)."""
        files = self.sourceDicomFiles(volumeNode, fresh=True)
        if len(files) == 1:
            return Upload(*dicom_upload(files[0]))
        return self.prepareUpload(volumeNode)

    # -- server calls (start on the main thread, network in a job) -----------------------------------------
    def _startInfer(self, name: str, model: str, params: dict[str, Any], inputNode: Any,
                    finish: Callable[[Any, InferResponse], Outcome],
                    makeUpload: Callable[[Any], Upload] | None = None) -> Operation:
        url = self.parameters().serverUrl
        self._requireConsent(url)
        upload = (makeUpload or self.prepareUpload)(inputNode)
        client = self.makeClient(url)
        inputID = inputNode.GetID()

        def work(progress: Any) -> InferResponse:
            try:
                return client.infer(model, params, upload=upload, progress=progress, cancel=progress.cancel_event)
            finally:
                client.close()

        def complete(response: InferResponse) -> Outcome:
            node = slicer.mrmlScene.GetNodeByID(inputID)
            if node is None:
                raise InputError(_("The input volume was removed while the server was working."))
            return finish(node, response)

        return Operation(name, Job(work, name).start(), complete)

    def startAnonymize(self, inputNode: Any = None, seed: int | None = None, newIdentity: bool = False) -> Operation:
        """Anonymize ``inputNode`` (default: the parameter node's input). ``newIdentity`` draws a new seed."""
        params = self.parameters()
        inputNode = inputNode or params.inputVolume
        self.validateInput(inputNode)
        if seed is None:
            seed = new_seed() if newIdentity or params.randomSeed else int(params.seed)
        if newIdentity:
            params.seed = seed
        request = {"seed": int(seed), "candidates": int(params.candidates), "mode": params.anonymizeMode or "full"}
        return self._startInfer("anonymize", "anonymize", request, inputNode, self._finishAnonymize,
                                self.previewUpload)

    def startCounterfactual(self, inputNode: Any = None, target: str | None = None) -> Operation:
        params = self.parameters()
        inputNode = inputNode or params.inputVolume
        self.validateInput(inputNode)
        target = target or params.target
        if not target:
            raise InputError(_("Choose the target class of the counterfactual (check the connection to list them)."))
        info = self.serverInfo
        if (info is not None and info.classes and info.url == normalize_server_url(params.serverUrl)
                and target not in info.classes):
            raise InputError(_("The model does not know the class '{target}'; it knows {classes}.").format(
                target=target, classes=", ".join(info.classes)))
        request = {"target": target, "mode": params.counterfactualMode or "residual"}
        return self._startInfer("counterfactual", "counterfactual", request, inputNode, self._finishCounterfactual)

    def startExplain(self, inputNode: Any = None, k: int | None = None) -> Operation:
        params = self.parameters()
        inputNode = inputNode or params.inputVolume
        self.validateInput(inputNode)
        request = {"k": int(k or params.k), "seed": new_seed()}
        return self._startInfer("explain", "explain", request, inputNode, self._finishExplain)

    def runOperation(self, operation: Operation, timeout: float | None = None) -> Outcome:
        """Wait for ``operation`` and complete it (blocking; scripts and tests)."""
        if not operation.job.wait(timeout):
            operation.job.cancel()
            raise CancelledError(_("The operation did not finish within {t} s.").format(t=timeout))
        return operation.complete()

    def anonymize(self, inputNode: Any = None, seed: int | None = None, timeout: float | None = None) -> Outcome:
        return self.runOperation(self.startAnonymize(inputNode, seed), timeout)

    def counterfactual(self, inputNode: Any = None, target: str | None = None,
                       timeout: float | None = None) -> Outcome:
        return self.runOperation(self.startCounterfactual(inputNode, target), timeout)

    def explain(self, inputNode: Any = None, k: int | None = None, timeout: float | None = None) -> Outcome:
        return self.runOperation(self.startExplain(inputNode, k), timeout)

    # -- results (main thread) ------------------------------------------------------------------------------
    def _readImage(self, response: InferResponse) -> tuple[np.ndarray, vtk.vtkMatrix4x4]:
        """The response's image as ``(array k-j-i, IJK-to-RAS)``; the temporary file is deleted at once."""
        if not response.image:
            raise ServerFailedError(_("The server answered without an image."), 200, "",
                                    json.dumps(response.params, indent=2)[:4000])
        name = os.path.basename(response.image_name or "result.nii.gz")
        suffix = ".nii.gz" if name.endswith(".nii.gz") else (os.path.splitext(name)[1] or ".nii.gz")
        folder = self._temporaryDirectory()
        try:
            path = os.path.join(folder, "result" + suffix)
            with open(path, "wb") as f:
                f.write(response.image)
            node = slicer.vtkMRMLScalarVolumeNode()
            storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
            storage.SetFileName(path)
            if not storage.ReadData(node) or node.GetImageData() is None:
                raise ServerFailedError(_("The server's image could not be read."), 200, "", name)
            array = np.array(slicer.util.arrayFromVolume(node), dtype=np.float32, copy=True)
            matrix = vtk.vtkMatrix4x4()
            node.GetIJKToRASMatrix(matrix)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return array, matrix

    @staticmethod
    def _matrixArray(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
        return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])

    def _inputGeometry(self, node: Any) -> tuple[np.ndarray, vtk.vtkMatrix4x4]:
        array = np.asarray(slicer.util.arrayFromVolume(node), dtype=np.float32)
        matrix = vtk.vtkMatrix4x4()
        node.GetIJKToRASMatrix(matrix)
        return array, matrix

    def _checkGeometry(self, inputNode: Any, array: np.ndarray, matrix: vtk.vtkMatrix4x4,
                       slices: int | None = None) -> list[str]:
        original, inMatrix = self._inputGeometry(inputNode)
        expected = original.shape if slices is None else (slices, *original.shape[1:])
        if array.shape != expected:
            raise ServerFailedError(
                _("The server returned an image of size {got} for an input of size {want}.").format(
                    got=" x ".join(map(str, array.shape[::-1])), want=" x ".join(map(str, expected[::-1]))),
                200, "")
        warnings = []
        if slices is None and not np.allclose(self._matrixArray(matrix), self._matrixArray(inMatrix), atol=1e-3):
            warnings.append(_("The server's result has a different position or spacing than the input."))
        return warnings

    def _shNode(self) -> Any:
        return slicer.mrmlScene.GetSubjectHierarchyNode()

    def _markItem(self, item: int) -> int:
        self._shNode().SetItemAttribute(item, OUTPUT_ATTRIBUTE, "1")
        return item

    def _newSubject(self, name: str, studyName: str, identityRemoved: bool, pseudonym: str) -> int:
        """A new patient/study pair that carries no data of the original patient."""
        sh = self._shNode()
        patient = self._markItem(sh.CreateSubjectItem(sh.GetSceneItemID(), name))
        sh.SetItemAttribute(patient, "DICOM.PatientName", f"Anonymous^{pseudonym}")
        sh.SetItemAttribute(patient, "DICOM.PatientID", f"ANON-{pseudonym}")
        sh.SetItemAttribute(patient, IDENTITY_ATTRIBUTE, "true" if identityRemoved else "false")
        study = self._markItem(sh.CreateStudyItem(patient, studyName))
        sh.SetItemAttribute(study, "DICOM.StudyDescription", studyName)
        return study

    def _differenceFolder(self, inputNode: Any) -> int:
        """The folder for difference maps: beside the original, since a difference map reveals it."""
        sh = self._shNode()
        inputItem = sh.GetItemByDataNode(inputNode)
        parent = sh.GetItemParent(inputItem) if inputItem else sh.GetSceneItemID()
        name = _("Case Anonymizer differences (contain original data)")
        for child in self._children(parent):
            if sh.GetItemName(child) == name and sh.GetItemAttribute(child, OUTPUT_ATTRIBUTE) == "1":
                return child
        return self._markItem(sh.CreateFolderItem(parent or sh.GetSceneItemID(), name))

    def _children(self, item: int) -> list[int]:
        ids = vtk.vtkIdList()
        self._shNode().GetItemChildren(item, ids)
        return [ids.GetId(i) for i in range(ids.GetNumberOfIds())]

    def _addVolume(self, array: np.ndarray, matrix: vtk.vtkMatrix4x4, name: str, parentItem: int,
                   like: Any) -> Any:
        """A new volume node (never a copy of the original's node: no attributes are inherited)."""
        node = slicer.util.addVolumeFromArray(np.ascontiguousarray(array, dtype=np.float32), ijkToRAS=matrix,
                                              name=name)
        node.SetAttribute(OUTPUT_ATTRIBUTE, "1")
        if like is not None and like.GetTransformNodeID():
            node.SetAndObserveTransformNodeID(like.GetTransformNodeID())
        sh = self._shNode()
        item = sh.GetItemByDataNode(node)
        if not item:
            item = sh.CreateItem(parentItem, node)
        else:
            sh.SetItemParent(item, parentItem)
        sh.SetItemAttribute(item, OUTPUT_ATTRIBUTE, "1")
        return node

    def _removeNodes(self, nodes: list[Any]) -> None:
        """Remove output nodes with their display nodes and subject hierarchy items, then empty output folders.

        The item goes first (without its data node), then the node: removing a data node through its item
        leaves a stale child entry in plain MRML, and this order is safe in desktop Slicer too.
        """
        sh = self._shNode()
        for node in nodes:
            if node is None or slicer.mrmlScene.GetNodeByID(node.GetID()) is None:
                continue
            item = sh.GetItemByDataNode(node)
            if item:
                sh.RemoveItem(item, False, False)
            helpers = [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
            helpers.append(node.GetStorageNode())
            slicer.mrmlScene.RemoveNode(node)
            for helper in helpers:
                if helper is not None and slicer.mrmlScene.GetNodeByID(helper.GetID()) is not None:
                    slicer.mrmlScene.RemoveNode(helper)
        self._removeEmptyOutputItems()

    def _removeEmptyOutputItems(self) -> None:
        """Remove the module's folders/patients/studies that hold nothing any more (never the user's items)."""
        sh = self._shNode()
        stuck: set[int] = set()
        while True:
            empty = [i for i in self._outputItems() if i not in stuck and not self._children(i)]
            if not empty:
                return
            for item in empty:
                if not sh.RemoveItem(item, False, False):
                    stuck.add(item)

    def _outputItems(self) -> list[int]:
        sh = self._shNode()
        ids = vtk.vtkIdList()
        sh.GetItemChildren(sh.GetSceneItemID(), ids, True)
        items = [ids.GetId(i) for i in range(ids.GetNumberOfIds())]
        return [i for i in items if sh.GetItemAttribute(i, OUTPUT_ATTRIBUTE) == "1" and not sh.GetItemDataNode(i)]

    def _difference(self, inputNode: Any, array: np.ndarray, matrix: vtk.vtkMatrix4x4, name: str) -> Any:
        original, _m = self._inputGeometry(inputNode)
        diff = array - original
        node = self._addVolume(diff, matrix, name, self._differenceFolder(inputNode), inputNode)
        display = node.GetDisplayNode()
        window, level = difference_window(diff)
        display.SetAutoWindowLevel(False)
        display.SetWindowLevel(window, level)
        colorNode = (slicer.mrmlScene.GetFirstNodeByName("DivergingBlueRed")
                     or slicer.mrmlScene.GetNodeByID("vtkMRMLColorTableNodeFileColdToHotRainbow.txt")
                     or slicer.mrmlScene.GetNodeByID("vtkMRMLColorTableNodeRainbow"))
        if colorNode is not None:
            display.SetAndObserveColorNodeID(colorNode.GetID())
        return node

    def _finishAnonymize(self, inputNode: Any, response: InferResponse) -> Outcome:
        array, matrix = self._readImage(response)
        warnings = self._checkGeometry(inputNode, array, matrix)
        params = self.parameters()
        self._removeNodes([params.anonymizedVolume, params.anonymizedDifference])  # "another identity" replaces
        details = dict(response.params)
        seed = details.get("seed")
        pseudonym = new_pseudonym()
        study = self._newSubject(_("Anonymous {p}").format(p=pseudonym), _("Anonymized preview"), True, pseudonym)
        name = _("Anonymized (identity seed {seed})").format(seed=seed) if seed is not None else _("Anonymized")
        anonymized = self._addVolume(array, matrix, name, study, inputNode)
        difference = self._difference(inputNode, array, matrix, _("Difference: anonymized - original"))
        params.anonymizedVolume = anonymized
        params.anonymizedDifference = difference
        params.previewInput = inputNode
        params.anonymizeDetails = json.dumps(details)
        if seed is not None:
            params.seed = int(seed)
        self.showComparison(inputNode, anonymized, difference)
        return Outcome("anonymize", details, summarize("anonymize", details), [anonymized, difference],
                       warnings=warnings)

    def _finishCounterfactual(self, inputNode: Any, response: InferResponse) -> Outcome:
        array, matrix = self._readImage(response)
        warnings = self._checkGeometry(inputNode, array, matrix)
        params = self.parameters()
        self._removeNodes([params.counterfactualVolume, params.counterfactualDifference])
        details = dict(response.params)
        target = details.get("target") or params.target
        pseudonym = new_pseudonym()
        study = self._newSubject(_("Counterfactual subject {p} (identity not removed)").format(p=pseudonym),
                                 _("Counterfactual: {target}").format(target=target), False, pseudonym)
        counterfactual = self._addVolume(array, matrix, _("Counterfactual: {target}").format(target=target), study,
                                         inputNode)
        difference = self._difference(inputNode, array, matrix,
                                      _("Difference: counterfactual {target} - original").format(target=target))
        params.counterfactualVolume = counterfactual
        params.counterfactualDifference = difference
        params.counterfactualDetails = json.dumps(details)
        self.showComparison(inputNode, counterfactual, difference)
        return Outcome("counterfactual", details, summarize("counterfactual", details), [counterfactual, difference],
                       warnings=warnings)

    def _finishExplain(self, inputNode: Any, response: InferResponse) -> Outcome:
        array, _matrix = self._readImage(response)
        details = dict(response.params)
        cases = list(details.get("cases") or [])
        if not cases:
            raise ServerFailedError(_("The server found no similar cases."), 200, "", json.dumps(details)[:4000])
        self._checkGeometry(inputNode, array, _matrix, slices=len(cases))
        params = self.parameters()
        self._removeNodes(params.caseVolumes)
        _original, inMatrix = self._inputGeometry(inputNode)
        pseudonym = new_pseudonym()
        study = self._newSubject(_("Similar training cases {p} (anonymized)").format(p=pseudonym),
                                 _("Case-based explanation"), True, pseudonym)
        nodes = []
        for i, case in enumerate(cases):
            distance = case.get("distance")
            label = _("Similar case {i}: {finding}").format(i=i + 1, finding=case.get("finding", "?"))
            if distance is not None:
                label += f" (distance {float(distance):.3g})"
            nodes.append(self._addVolume(array[i:i + 1], inMatrix, label, study, inputNode))
        params.caseVolumes = nodes
        params.explainDetails = json.dumps(details)
        params.currentCase = 1
        self.showCase(1, inputNode)
        return Outcome("explain", details, summarize("explain", details), nodes)

    # -- export --------------------------------------------------------------------------------------------
    def planExport(self, inputNode: Any = None) -> ExportPlan:
        """What an export will do; raises :class:`InputError` when it cannot be done as set up."""
        params = self.parameters()
        inputNode = inputNode or params.inputVolume
        if inputNode is None:
            raise InputError(_("Select an input volume first."))
        files = self.sourceDicomFiles(inputNode, fresh=True)
        if not files:
            raise InputError(_("Export needs a volume loaded from Slicer's DICOM database; this one was not, so "
                               "there are no DICOM files to anonymize."))
        folder = (params.exportFolder or "").strip() if params.exportToFolder else None
        if params.exportToFolder and not folder:
            raise InputError(_("Choose the folder the anonymized DICOM files go to."))
        if not (params.exportToFolder or params.exportToDatabase or params.exportToPacs):
            raise InputError(_("Choose where the anonymized study goes: a folder, the DICOM database or the PACS."))
        options = params.deid_options()
        if options["retain_full_dates"] and options["retain_modified_dates"]:
            raise InputError(_("'Keep dates, shifted' and 'Keep full dates' exclude each other; choose one."))
        previewed: dict[str, Any] = {}
        preview = params.previewInput
        if (params.anonymizedVolume is not None and preview is not None and preview.GetID() == inputNode.GetID()
                and params.anonymizeDetails):
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                previewed = dict(json.loads(params.anonymizeDetails))
        previewSeed = previewed.get("seed")
        seed = int(previewSeed) if previewSeed is not None else new_seed()
        fromDicom = (previewed.get("input") or {}).get("format") == "dicom" and "identity_seed" in previewed
        warnings = []
        if folder and os.path.isdir(folder) and os.listdir(folder):
            warnings.append(_("the folder is not empty; files with the same names are overwritten."))
        if params.headersOnly:
            warnings.append(_("'Headers only' keeps the original pixels: the face or body shape and any burned-in "
                              "text stay identifiable."))
        return ExportPlan(server=normalize_server_url(params.serverUrl), source_files=files, seed=seed,
                          seed_from_preview=previewSeed is not None, headers_only=bool(params.headersOnly),
                          options=options, folder=folder, to_database=bool(params.exportToDatabase),
                          to_pacs=bool(params.exportToPacs), warnings=warnings,
                          candidates=int(previewed.get("candidates") or params.candidates),
                          mode=str(previewed.get("mode") or params.anonymizeMode or "full"), matches_preview=fromDicom)

    def startExport(self, plan: ExportPlan) -> Operation:
        """Send the source DICOM files to the server's ``export`` task in one request (a zip: one
        de-identification pass covers the series, so its study and series UIDs stay together); write the
        answer where the plan says."""
        self._requireConsent(plan.server)
        client = self.makeClient(plan.server)
        request = plan.params()
        upload = Upload(*dicom_zip_upload(list(plan.source_files)))

        def work(progress: Any) -> InferResponse:
            try:
                return client.infer("export", request, upload=upload, progress=progress, cancel=progress.cancel_event)
            finally:
                client.close()

        return Operation("export", Job(work, "export").start(), lambda response: self._finishExport(plan, response))

    def _finishExport(self, plan: ExportPlan, response: InferResponse) -> Outcome:
        """Write the exported zip where the plan says; a PACS that did not take it is a warning, never a reason
        to lose the files (the server answers with the zip either way)."""
        details = dict(response.params)
        written: list[str] = []
        warnings: list[str] = []
        if plan.folder or plan.to_database:
            if not response.image:
                raise ServerFailedError(_("The server exported nothing."), 200, "", summarize("export", details))
            target = plan.folder or self._temporaryDirectory()
            try:
                written = [str(p) for p in extract_zip(response.image, target)]
                if plan.to_database:
                    self.dicomImporter(target, plan.folder is None)
            finally:
                if plan.folder is None:
                    shutil.rmtree(target, ignore_errors=True)
            if plan.folder is None:
                written = []
        stow = details.get("stow")
        if plan.to_pacs and isinstance(stow, dict) and not stow.get("ok", not stow.get("error")):
            warnings.append(_("The PACS did not take the study: {error}").format(
                error=stow.get("error") or _("no reason given")))
        self.parameters().exportDetails = json.dumps(details)
        text = summarize("export", details)
        if plan.folder:
            text += "\n" + _("Written to {folder}.").format(folder=plan.folder)
        if plan.to_database:
            text += "\n" + _("Imported into Slicer's DICOM database.")
        return Outcome("export", details, text, files=written, warnings=warnings)

    def export(self, plan: ExportPlan | None = None, timeout: float | None = None) -> Outcome:
        """Blocking export (scripts, tests)."""
        return self.runOperation(self.startExport(plan or self.planExport()), timeout)

    # -- views (main thread) ---------------------------------------------------------------------------------
    def _layoutNode(self) -> Any:
        node = slicer.mrmlScene.GetSingletonNode("vtkMRMLLayoutNode", "vtkMRMLLayoutNode")
        if node is None:
            nodes = slicer.mrmlScene.GetNodesByClass("vtkMRMLLayoutNode")
            node = nodes.GetItemAsObject(0) if nodes.GetNumberOfItems() else None
        return node

    def _setLayout(self, layoutId: int, roles: tuple[str, ...]) -> list[Any]:
        """Switch to one of the module's layouts (remembering the user's) and return its slice nodes."""
        layoutNode = self._layoutNode()
        if layoutNode is None:
            return []
        params = self.parameters()
        current = layoutNode.GetViewArrangement()
        if current not in (COMPARE_LAYOUT_ID, EXPLAIN_LAYOUT_ID):
            params.savedLayout = current
        if not layoutNode.IsLayoutDescription(layoutId):
            layoutNode.AddLayoutDescription(layoutId, layout_xml(roles))
        else:
            layoutNode.SetLayoutDescription(layoutId, layout_xml(roles))
        layoutNode.SetViewArrangement(layoutId)
        return [slicer.mrmlScene.GetSingletonNode(VIEWS[r][0], "vtkMRMLSliceNode") for r in roles]

    def _compositeNode(self, sliceNode: Any) -> Any:
        name = sliceNode.GetLayoutName()
        nodes = slicer.mrmlScene.GetNodesByClass("vtkMRMLSliceCompositeNode")
        for i in range(nodes.GetNumberOfItems()):
            node = nodes.GetItemAsObject(i)
            if node.GetLayoutName() == name:
                return node
        # the views are not built yet (no GUI): create the composite node their slice logic will adopt
        node = slicer.vtkMRMLSliceCompositeNode()
        node.SetLayoutName(name)
        return slicer.mrmlScene.AddNode(node)

    def _showInViews(self, sliceNodes: list[Any], volumes: list[Any]) -> None:
        for sliceNode, volume in zip(sliceNodes, volumes):
            if sliceNode is None:
                continue
            sliceNode.SetViewGroup(VIEW_GROUP)
            composite = self._compositeNode(sliceNode)
            composite.SetBackgroundVolumeID(volume.GetID() if volume is not None else None)
            composite.SetForegroundVolumeID(None)
            composite.SetLabelVolumeID(None)
            composite.SetLinkedControl(True)
            composite.SetHotLinkedControl(False)
            if volume is not None:
                sliceNode.RotateToVolumePlane(volume)
                bounds = [0.0] * 6
                volume.GetRASBounds(bounds)
                sliceNode.JumpSliceByCentering((bounds[0] + bounds[1]) / 2, (bounds[2] + bounds[3]) / 2,
                                               (bounds[4] + bounds[5]) / 2)
        self._fitViews()

    def _fitViews(self) -> None:
        appLogic = slicer.app.applicationLogic() if hasattr(slicer.app, "applicationLogic") else None
        if appLogic is not None and hasattr(appLogic, "FitSliceToAll"):
            appLogic.FitSliceToAll()

    def showComparison(self, original: Any, result: Any, difference: Any) -> None:
        """Original | result | difference, with linked slices and linked window/level (original, result)."""
        sliceNodes = self._setLayout(COMPARE_LAYOUT_ID, ("original", "result", "difference"))
        self._showInViews(sliceNodes, [original, result, difference])
        self.windowLevelLink.link([original.GetDisplayNode(), result.GetDisplayNode()])

    def showCase(self, index: int, original: Any = None) -> Any:
        """Original | similar case ``index`` (1-based); returns the case's node."""
        params = self.parameters()
        cases = params.caseVolumes
        if not cases:
            return None
        index = max(1, min(int(index), len(cases)))
        original = original or params.inputVolume
        sliceNodes = self._setLayout(EXPLAIN_LAYOUT_ID, ("original", "result"))
        self._showInViews(sliceNodes, [original, cases[index - 1]])
        self.windowLevelLink.link([n.GetDisplayNode() for n in [original, cases[index - 1]] if n is not None])
        if params.currentCase != index:
            params.currentCase = index
        return cases[index - 1]

    def restoreLayout(self) -> None:
        params = self.parameters()
        layoutNode = self._layoutNode()
        if layoutNode is not None and params.savedLayout >= 0:
            if layoutNode.GetViewArrangement() in (COMPARE_LAYOUT_ID, EXPLAIN_LAYOUT_ID):
                layoutNode.SetViewArrangement(params.savedLayout)
            params.savedLayout = -1

    # -- reset --------------------------------------------------------------------------------------------------
    def outputNodes(self) -> list[Any]:
        """Every node this module created that is still in the scene."""
        nodes = slicer.mrmlScene.GetNodesByClass("vtkMRMLVolumeNode")
        found = []
        for i in range(nodes.GetNumberOfItems()):
            node = nodes.GetItemAsObject(i)
            if node.GetAttribute(OUTPUT_ATTRIBUTE) == "1":
                found.append(node)
        return found

    def reset(self) -> None:
        """Remove every output of the module, unlink the views and restore the user's layout."""
        self.windowLevelLink.clear()
        self._removeNodes(self.outputNodes())  # also removes the module's then empty folders
        params = self.parameters()
        for name in ("anonymizedVolume", "anonymizedDifference", "counterfactualVolume", "counterfactualDifference",
                     "previewInput"):
            setattr(params, name, None)
        params.caseVolumes = []
        for name in ("anonymizeDetails", "counterfactualDetails", "explainDetails", "exportDetails"):
            setattr(params, name, "")
        self.restoreLayout()
