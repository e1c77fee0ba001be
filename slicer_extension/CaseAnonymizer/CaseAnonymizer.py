"""Case Anonymizer: preview anonymized and counterfactual images beside the original, browse case-based
explanations and export anonymized studies, using a monai-anon MONAI Label server.

This file holds the Module, the Widget (the panel: UI wiring only) and the self-test; the Logic and
everything it is built from live in :mod:`CaseAnonymizerLib` (Qt-free). Only the main thread touches MRML
and Qt; network calls run in background jobs that the Widget polls with a ``qt.QTimer``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

import ctk
import numpy as np
import qt
import slicer
import vtk
from CaseAnonymizerLib import (
    BINDINGS,
    COMPARE_LAYOUT_ID,
    CancelledError,
    LoginRequiredError,
    Operation,
    Outcome,
    Parameters,
    UrlHistory,
    describe,
)
from CaseAnonymizerLib.i18n import tr as _
from CaseAnonymizerLib.i18n import translate
from CaseAnonymizerLib.logic import CaseAnonymizerLogic
from CaseAnonymizerLib.parameters import signal_for
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

CaseAnonymizerLogic.settingsFactory = qt.QSettings  # Slicer's persistent settings for logics made without any

OPERATIONS = ("anonymize", "counterfactual", "explain", "export")
APPLY_TEXTS = {"anonymize": "Anonymize", "counterfactual": "Generate counterfactual", "explain": "Explain",
               "export": "Export..."}


#
# CaseAnonymizer
#


class CaseAnonymizer(ScriptedLoadableModule):
    """Module description (see the extension README for the user documentation)."""

    def __init__(self, parent: Any) -> None:
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Case Anonymizer")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Informatics")]
        self.parent.dependencies = []
        self.parent.contributors = ["monai-anon contributors"]
        self.parent.helpText = _(
            "Preview an anonymized version of an image (a synthetic patient identity, same finding), "
            "counterfactual images towards another finding, and case-based explanations made of anonymized "
            "similar training cases, beside the original; export the anonymized study as DICOM. Images are "
            "processed by a monai-anon MONAI Label server; nothing is sent before you agree to it.")
        self.parent.acknowledgementText = _(
            "Built on MONAI Label and 3D Slicer. The method follows Montenegro and Cardoso, "
            "'Anonymizing medical case-based explanations through disentanglement' (arXiv 2311.04833).")


#
# CaseAnonymizerWidget
#


class CaseAnonymizerWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: binds widgets to the parameter node and drives the logic; all work is in the logic."""

    def __init__(self, parent: Any = None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: CaseAnonymizerLogic | None = None
        self._parameterNode: Any = None
        self._updatingGUI = False
        self.operation: Operation | None = None
        self.timer: Any = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/CaseAnonymizer.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = CaseAnonymizerLogic()
        self.ui.serverUrlComboBox.addItems(self.logic.urlHistory.urls())
        self.ui.exportFolderPathLineEdit.filters = ctk.ctkPathLineEdit.Dirs
        self.ui.caBundlePathLineEdit.filters = ctk.ctkPathLineEdit.Files
        self.ui.progressBar.visible = False

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        for binding in BINDINGS:
            widget = getattr(self.ui, binding.widget)
            widget.connect(signal_for(widget.className(), binding.property), self.updateParameterNodeFromGUI)
        self.ui.connectButton.connect("clicked(bool)", self.onCheckConnection)
        self.ui.loginButton.connect("clicked(bool)", self.onLogin)
        self.ui.forgetConsentButton.connect("clicked(bool)", self.onForgetConsent)
        self.ui.applyButton.connect("clicked(bool)", self.onApply)
        self.ui.anotherIdentityButton.connect("clicked(bool)", self.onAnotherIdentity)
        self.ui.resetButton.connect("clicked(bool)", self.onReset)
        self.ui.caseSliderWidget.connect("valueChanged(double)", self.onCaseChanged)

        self.timer = qt.QTimer()
        self.timer.setInterval(100)
        self.timer.connect("timeout()", self.onPoll)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        if self.operation is not None:
            self.operation.job.cancel()
        if self.timer is not None:
            self.timer.stop()
        self.removeObservers()
        if self.logic is not None:
            self.logic.windowLevelLink.clear()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        node = self._parameterNode
        if node is not None and self.hasObserver(node, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode):
            self.removeObserver(node, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)

    def onSceneStartClose(self, caller: Any, event: Any) -> None:
        if self.operation is not None:
            self.onCancel()
        self.logic.windowLevelLink.clear()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller: Any, event: Any) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    # -- parameter node <-> GUI --------------------------------------------------------------------------
    def initializeParameterNode(self) -> None:
        self.logic.selectDefaultInput()
        self.setParameterNode(self.logic.parameters().node)

    def setParameterNode(self, node: Any) -> None:
        if self._parameterNode is not None and self.hasObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent,
                                                                self.updateGUIFromParameterNode):
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self._parameterNode = node
        if node is not None:
            self.addObserver(node, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self.updateGUIFromParameterNode()

    def updateGUIFromParameterNode(self, caller: Any = None, event: Any = None) -> None:
        if self._parameterNode is None or self._updatingGUI:
            return
        self._updatingGUI = True
        try:
            params = Parameters(self._parameterNode)
            self.ui.caseSliderWidget.maximum = max(1, len(params.caseVolumes))  # before its value is set
            for binding in BINDINGS:
                widget = getattr(self.ui, binding.widget)
                value = getattr(params, binding.parameter)
                wasBlocked = widget.blockSignals(True)
                if binding.property == "currentNode":
                    widget.setCurrentNode(value)
                elif binding.property == "currentText":
                    if value and widget.findText(value) < 0 and not widget.editable:
                        widget.addItem(value)
                    widget.setCurrentText(value)
                else:
                    setattr(widget, binding.property, value)
                widget.blockSignals(wasBlocked)
            self._updateStates(params)
        finally:
            self._updatingGUI = False

    def updateParameterNodeFromGUI(self, *args: Any) -> None:
        if self._parameterNode is None or self._updatingGUI:
            return
        wasModifying = self._parameterNode.StartModify()
        params = Parameters(self._parameterNode)
        for binding in BINDINGS:
            widget = getattr(self.ui, binding.widget)
            value = widget.currentNode() if binding.property == "currentNode" else getattr(widget, binding.property)
            setattr(params, binding.parameter, value)
        self._parameterNode.EndModify(wasModifying)

    def _updateStates(self, params: Parameters) -> None:
        busy = self.operation is not None
        operation = OPERATIONS[max(0, min(params.operationIndex, len(OPERATIONS) - 1))]
        self.ui.applyButton.text = _("Cancel") if busy else _(APPLY_TEXTS[operation])
        self.ui.applyButton.enabled = busy or params.inputVolume is not None
        self.ui.anotherIdentityButton.enabled = not busy and params.inputVolume is not None
        self.ui.seedSpinBox.enabled = not params.randomSeed
        self.ui.exportFolderPathLineEdit.enabled = params.exportToFolder
        for name in ("serverCollapsibleButton", "inputCollapsibleButton", "resetButton"):
            getattr(self.ui, name).enabled = not busy
        self.ui.inputInfoLabel.text = self.logic.describeInput(params.inputVolume)
        cases = params.caseVolumes
        self.ui.caseSliderWidget.enabled = len(cases) > 1
        self.ui.caseSliderWidget.maximum = max(1, len(cases))

    # -- connection and consent ---------------------------------------------------------------------------
    def onCheckConnection(self) -> None:
        self._start(self.logic.startCheckConnection)

    def onLogin(self) -> None:
        if not self._login():
            self.ui.statusLabel.text = _("Not logged in.")

    def _login(self) -> bool:
        """Ask for the user name and password and start logging in; False when the user cancelled."""
        credentials = self.askCredentials()
        if credentials is None:
            return False
        username, password = credentials
        self._start(lambda: self.logic.startLogin(username, password))
        return True

    def askCredentials(self) -> tuple[str, str] | None:
        """The user name and password for the current server, from a dialog (None when cancelled)."""
        dialog = qt.QDialog(slicer.util.mainWindow())
        dialog.setWindowTitle(_("Log in to {url}").format(url=self.logic.parameters().serverUrl))
        form = qt.QFormLayout(dialog)
        user = qt.QLineEdit(self.logic.loggedInAs() or "")
        password = qt.QLineEdit()
        password.setEchoMode(qt.QLineEdit.Password)
        form.addRow(_("User name:"), user)
        form.addRow(_("Password:"), password)
        buttons = qt.QDialogButtonBox(qt.QDialogButtonBox.Ok | qt.QDialogButtonBox.Cancel)
        buttons.connect("accepted()", dialog.accept)
        buttons.connect("rejected()", dialog.reject)
        form.addRow(buttons)
        if dialog.exec_() != qt.QDialog.Accepted:
            return None
        return user.text.strip(), password.text

    def onForgetConsent(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not forget the consent."), waitCursor=True):
            self.logic.revokeConsent()
            self.ui.statusLabel.text = _("Images will not be sent to this server before you agree again.")

    def _askConsent(self) -> bool:
        if not self.logic.needsConsent():
            return True
        box = qt.QMessageBox(slicer.util.mainWindow())
        box.setWindowTitle(_("Send images to the server?"))
        box.setIcon(qt.QMessageBox.Question)
        box.setText(self.logic.consentText())
        box.setStandardButtons(qt.QMessageBox.Yes | qt.QMessageBox.No)
        box.setDefaultButton(qt.QMessageBox.No)
        remember = qt.QCheckBox(_("Remember my answer for this server"))
        box.setCheckBox(remember)
        if box.exec_() != qt.QMessageBox.Yes:
            self.ui.statusLabel.text = _("Nothing was sent.")
            return False
        self.logic.grantConsent(remember=remember.checked)
        return True

    # -- operations -----------------------------------------------------------------------------------------
    def onApply(self) -> None:
        if self.operation is not None:
            self.onCancel()
            return
        params = self.logic.parameters()
        operation = OPERATIONS[params.operationIndex]
        if operation == "export":
            self._startExport()
        else:
            start = {"anonymize": self.logic.startAnonymize, "counterfactual": self.logic.startCounterfactual,
                     "explain": self.logic.startExplain}[operation]
            self._start(start, needsConsent=True)

    def onAnotherIdentity(self) -> None:
        self.ui.operationTabWidget.currentIndex = OPERATIONS.index("anonymize")
        self._start(lambda: self.logic.startAnonymize(newIdentity=True), needsConsent=True)

    def _startExport(self) -> None:
        try:
            plan = self.logic.planExport()
        except Exception as exc:
            self._showError(exc)
            return
        if not slicer.util.confirmOkCancelDisplay(plan.describe(), windowTitle=_("Export the anonymized study")):
            self.ui.statusLabel.text = _("Export cancelled; nothing was sent or written.")
            return
        self._start(lambda: self.logic.startExport(plan), needsConsent=True)

    def _start(self, start: Callable[[], Operation], needsConsent: bool = False) -> None:
        if self.operation is not None:
            return
        try:
            if needsConsent and not self._askConsent():
                return
            self.operation = start()
        except Exception as exc:
            self._showError(exc)
            return
        self.ui.statusLabel.text = ""
        self.ui.progressBar.visible = True
        self.ui.progressBar.setRange(0, 0)
        self._updateStates(self.logic.parameters())
        self.timer.start()

    def onCancel(self) -> None:
        if self.operation is None:
            return
        self.operation.job.cancel()
        self.onPoll()

    def onPoll(self) -> None:
        operation = self.operation
        if operation is None:
            self.timer.stop()
            return
        _state, stage, fraction = operation.job.snapshot()
        if fraction is None:
            self.ui.progressBar.setRange(0, 0)
        else:
            self.ui.progressBar.setRange(0, 100)
            self.ui.progressBar.value = round(100 * fraction)
        self.ui.statusLabel.text = stage
        if not operation.job.finished:
            return
        self.timer.stop()
        self.operation = None
        self.ui.progressBar.visible = False
        try:
            with slicer.util.WaitCursor():
                outcome = operation.complete()
        except CancelledError:
            self.ui.statusLabel.text = _("Cancelled.")
        except Exception as exc:
            self._showError(exc)
        else:
            self._showOutcome(outcome)
        self._updateStates(self.logic.parameters())

    def _showOutcome(self, outcome: Outcome) -> None:
        if outcome.operation == "connect":
            info = self.logic.serverInfo
            self.ui.serverStatusLabel.text = outcome.summary
            self._refreshUrlHistory(info.url)
            self._fillTargets(info.classes)
        self.ui.statusLabel.text = " ".join([_("Done."), *outcome.warnings])
        self.ui.resultLabel.text = outcome.summary if outcome.operation != "connect" else ""
        self.ui.detailsTextEdit.setPlainText(json.dumps(outcome.details, indent=2, default=str))
        if outcome.operation in ("anonymize", "counterfactual", "explain"):
            slicer.util.resetSliceViews()

    def _refreshUrlHistory(self, current: str) -> None:
        combo = self.ui.serverUrlComboBox
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        combo.addItems(self.logic.urlHistory.urls())
        combo.setCurrentText(current)
        combo.blockSignals(wasBlocked)
        self.updateParameterNodeFromGUI()

    def _fillTargets(self, classes: list[str]) -> None:
        combo = self.ui.targetComboBox
        target = self.logic.defaultTarget(classes)
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        combo.addItems(classes)
        combo.setCurrentText(target)
        combo.blockSignals(wasBlocked)
        self.updateParameterNodeFromGUI()

    def _showError(self, exc: BaseException) -> None:
        sentence, details = describe(exc)
        logging.getLogger("CaseAnonymizer").warning("%s\n%s", sentence, details)
        self.ui.statusLabel.text = sentence
        self.ui.resultLabel.text = ""
        self.ui.detailsTextEdit.setPlainText(details or sentence)
        if isinstance(exc, LoginRequiredError):  # no login, an expired one, or a wrong password: ask (again)
            self.ui.serverStatusLabel.text = sentence
            self._login()

    def onCaseChanged(self, value: float) -> None:
        if self._updatingGUI or self.operation is not None:
            return
        with slicer.util.tryWithErrorDisplay(_("Could not show the case."), waitCursor=True):
            case = self.logic.showCase(round(value))
            if case is not None:
                self.ui.caseInfoLabel.text = case.GetName()

    def onReset(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Reset failed."), waitCursor=True):
            self.logic.reset()
            self.ui.statusLabel.text = _("Results removed; layout restored.")
            self.ui.resultLabel.text = ""
            self.ui.caseInfoLabel.text = ""
            self.ui.detailsTextEdit.setPlainText("")


#
# CaseAnonymizerTest
#


class CaseAnonymizerTest(ScriptedLoadableModuleTest):
    """Self-test for desktop Slicer (Developer mode > Reload and Test) and for the pytest suite.

    It talks to no machine but the configured server: the URL comes from the environment variable
    ``CASE_ANONYMIZER_TEST_SERVER`` or the module's settings; without a reachable server only the
    offline parts run. Only a synthetic image is sent.
    """

    serverUrl: str | None = None

    def setUp(self) -> None:
        slicer.mrmlScene.Clear(0)

    def runTest(self) -> None:
        self.setUp()
        self.test_parameters_and_layout()
        self.setUp()
        self.test_server_down_message()
        self.setUp()
        self.test_server_round_trip()

    def _syntheticVolume(self) -> Any:
        yy, xx = np.mgrid[0:64, 0:64].astype(np.float32)
        image = 200.0 * np.exp(-((xx - 32) ** 2 + (yy - 30) ** 2) / 300.0) + 20.0 * (xx / 64.0)
        matrix = np.diag([-0.5, -0.5, 1.0, 1.0])
        volume = slicer.util.addVolumeFromArray(image[np.newaxis].astype(np.float32), ijkToRAS=matrix,
                                                name="CaseAnonymizerTestImage")
        return volume

    def test_parameters_and_layout(self) -> None:
        self.delayDisplay("Parameters, layout and reset")
        logic = CaseAnonymizerLogic()
        params = logic.parameters()
        volume = self._syntheticVolume()
        params.inputVolume = volume
        self.assertEqual(params.inputVolume.GetID(), volume.GetID())
        diff = logic._difference(volume, np.zeros((1, 64, 64), np.float32), vtk.vtkMatrix4x4(), "test difference")
        logic.showComparison(volume, volume, diff)
        layoutNode = logic._layoutNode()
        if layoutNode is not None:
            self.assertEqual(layoutNode.GetViewArrangement(), COMPARE_LAYOUT_ID)
        logic.reset()
        self.assertIsNone(slicer.mrmlScene.GetNodeByID(diff.GetID()))
        self.assertIsNotNone(slicer.mrmlScene.GetNodeByID(volume.GetID()))
        self.delayDisplay("Parameters, layout and reset: passed")

    def test_server_down_message(self) -> None:
        self.delayDisplay("Message when no server answers")
        with socket.socket() as s:  # a port on this computer that nobody listens to
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        logic = CaseAnonymizerLogic()
        logic.parameters().timeoutSeconds = 5
        try:
            logic.checkConnection(f"http://127.0.0.1:{port}", timeout=30)
        except Exception as exc:
            sentence, _details = describe(exc)
            self.assertIn("Cannot reach the server", sentence)
        else:
            self.fail("a closed port answered")
        self.delayDisplay("Message when no server answers: passed")

    def _testServerUrl(self) -> str | None:
        url = self.serverUrl or os.environ.get("CASE_ANONYMIZER_TEST_SERVER")
        if not url:
            history = UrlHistory(qt.QSettings()).urls()
            url = history[0] if history else None
        return url

    def test_server_round_trip(self) -> None:
        url = self._testServerUrl()
        logic = CaseAnonymizerLogic()
        try:
            info = logic.checkConnection(url, timeout=60) if url else None
        except Exception as exc:
            info = None
            self.delayDisplay(f"Server round trip skipped: {describe(exc)[0]}")
        if info is None:
            self.delayDisplay("Server round trip skipped: no server configured")
            return
        self.delayDisplay(f"Server round trip with {info.url}")
        params = logic.parameters()
        params.serverUrl = info.url
        volume = self._syntheticVolume()
        params.inputVolume = volume
        original = np.array(slicer.util.arrayFromVolume(volume))
        logic.grantConsent(info.url, remember=False)  # a synthetic image only; not remembered
        outcome = logic.anonymize(volume, seed=1234, timeout=300)
        anonymized = outcome.nodes[0]
        self.assertEqual(slicer.util.arrayFromVolume(anonymized).shape, original.shape)
        self.assertEqual(int(outcome.details.get("seed")), 1234)
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(volume), original)
        if info.classes:
            outcome = logic.counterfactual(volume, target=info.classes[-1], timeout=300)
            self.assertEqual(slicer.util.arrayFromVolume(outcome.nodes[0]).shape, original.shape)
        outcome = logic.explain(volume, k=2, timeout=300)
        self.assertEqual(len(outcome.nodes), 2)
        logic.reset()
        self.assertEqual(logic.outputNodes(), [])
        self.delayDisplay("Server round trip: passed")
