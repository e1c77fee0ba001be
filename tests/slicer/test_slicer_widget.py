"""The module's Widget driven through strict fake widgets built from the .ui (see fake_widgets.py).

This checks the Widget's own logic — bindings in both directions, Apply turning into Cancel, the
consent question, errors as one sentence with details — with the real Logic, real MRML and, where
marked, the real server. PythonQt itself is only available in desktop Slicer (the module's self-test).
"""

from __future__ import annotations

import contextlib
import json
import time
import types
from typing import Any

import fake_widgets
import numpy as np
import pytest
from conftest import UI_FILE, load_dicom


@pytest.fixture
def widget(scene, module, shim, monkeypatch) -> Any:
    import ctk
    import qt
    import slicer

    loaded: dict[int, fake_widgets.FakeUi] = {}

    def load_ui(path: str) -> Any:
        assert path == str(UI_FILE)
        ui = fake_widgets.FakeUi(path)
        loaded[id(ui.root)] = ui
        return ui.root

    @contextlib.contextmanager
    def try_with_error_display(message: str | None = None, show: bool = True, waitCursor: bool = False):
        yield  # errors propagate to the test

    fake_widgets.QMessageBox.answer = fake_widgets.QMessageBox.Yes
    fake_widgets.QMessageBox.remember = False
    fake_widgets.QMessageBox.asked = []
    confirmations: list[str] = []
    monkeypatch.setattr(qt, "QMessageBox", fake_widgets.QMessageBox, raising=False)
    monkeypatch.setattr(qt, "QCheckBox", fake_widgets.QCheckBox, raising=False)
    monkeypatch.setattr(ctk, "ctkPathLineEdit", types.SimpleNamespace(Dirs=1, Files=2), raising=False)
    monkeypatch.setattr(slicer.util, "loadUI", load_ui)
    monkeypatch.setattr(slicer.util, "childWidgetVariables", lambda root: loaded[id(root)].variables())
    monkeypatch.setattr(slicer.util, "mainWindow", lambda: None)
    monkeypatch.setattr(slicer.util, "WaitCursor", contextlib.nullcontext)
    monkeypatch.setattr(slicer.util, "tryWithErrorDisplay", try_with_error_display)
    monkeypatch.setattr(slicer.util, "resetSliceViews", lambda: None)
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay",
                        lambda text, **kw: confirmations.append(text) or True)
    w = module.CaseAnonymizerWidget()
    w.setup()
    w.confirmations = confirmations
    yield w
    w.cleanup()


def run_to_end(w: Any, timeout: float = 180) -> None:
    """Drive the Widget's poll timer until its operation ends."""
    deadline = time.monotonic() + timeout
    while w.operation is not None:
        assert time.monotonic() < deadline, "operation did not finish"
        w.onPoll()
        time.sleep(0.05)


def test_gui_shows_the_parameter_node_and_edits_it(widget) -> None:
    ui, params = widget.ui, widget.logic.parameters()
    assert ui.serverUrlComboBox.currentText == params.serverUrl == "http://127.0.0.1:8000"
    assert ui.kSpinBox.value == 3 and ui.randomSeedCheckBox.checked and not ui.seedSpinBox.enabled
    ui.randomSeedCheckBox.click()
    ui.seedSpinBox.value = 5
    ui.kSpinBox.value = 7
    ui.retainUidsCheckBox.checked = True
    assert (params.randomSeed, params.seed, params.k, params.retainUids) == (False, 5, 7, True)
    assert ui.seedSpinBox.enabled
    params.candidates = 12  # e.g. a scene was loaded: the GUI follows the parameter node
    assert ui.candidatesSpinBox.value == 12
    ui.operationTabWidget.currentIndex = 1
    assert params.operationIndex == 1 and ui.applyButton.text == "Generate counterfactual"
    ui.operationTabWidget.currentIndex = 3
    assert ui.applyButton.text == "Export..."


def test_input_selection_enables_apply_and_describes_the_input(widget) -> None:
    import slicer

    ui = widget.ui
    assert not ui.applyButton.enabled
    node = slicer.util.addVolumeFromArray(np.ones((1, 16, 16), np.float32))
    ui.inputVolumeSelector.setCurrentNode(node)
    assert widget.logic.parameters().inputVolume.GetID() == node.GetID()
    assert ui.applyButton.enabled and "preview only" in ui.inputInfoLabel.text


def test_server_down_is_one_sentence_with_details(widget, dead_url: str) -> None:
    import slicer

    ui = widget.ui
    ui.serverUrlComboBox.setCurrentText(dead_url)
    ui.inputVolumeSelector.setCurrentNode(slicer.util.addVolumeFromArray(np.ones((1, 16, 16), np.float32)))
    ui.applyButton.click()
    assert fake_widgets.QMessageBox.asked and dead_url in fake_widgets.QMessageBox.asked[0]
    run_to_end(widget, 60)
    assert ui.statusLabel.text.startswith(f"Cannot reach the server at {dead_url}")
    assert "\n" not in ui.statusLabel.text and ui.detailsTextEdit.toPlainText()
    assert ui.applyButton.text == "Anonymize" and not ui.progressBar.visible


def test_refusing_consent_sends_nothing(widget, silent_url: str) -> None:
    import slicer

    ui = widget.ui
    fake_widgets.QMessageBox.answer = fake_widgets.QMessageBox.No
    ui.serverUrlComboBox.setCurrentText(silent_url)
    ui.inputVolumeSelector.setCurrentNode(slicer.util.addVolumeFromArray(np.ones((1, 16, 16), np.float32)))
    ui.applyButton.click()
    assert widget.operation is None and ui.statusLabel.text == "Nothing was sent."
    assert widget.logic.needsConsent(silent_url)


def test_apply_turns_into_cancel(widget, silent_url: str) -> None:
    import slicer

    ui = widget.ui
    ui.serverUrlComboBox.setCurrentText(silent_url)
    ui.inputVolumeSelector.setCurrentNode(slicer.util.addVolumeFromArray(np.ones((1, 16, 16), np.float32)))
    ui.applyButton.click()
    assert widget.operation is not None
    assert ui.applyButton.text == "Cancel" and ui.applyButton.enabled and ui.progressBar.visible
    assert not ui.serverCollapsibleButton.enabled and not ui.resetButton.enabled
    widget.onPoll()
    assert ui.statusLabel.text  # the current stage
    ui.applyButton.click()  # Cancel
    assert widget.operation is None and ui.statusLabel.text == "Cancelled."
    assert ui.applyButton.text == "Anonymize" and ui.serverCollapsibleButton.enabled
    assert widget.logic.outputNodes() == []


def test_export_without_dicom_explains_why(widget, tmp_path) -> None:
    import slicer

    ui = widget.ui
    ui.inputVolumeSelector.setCurrentNode(slicer.util.addVolumeFromArray(np.ones((1, 16, 16), np.float32)))
    ui.operationTabWidget.currentIndex = 3
    ui.exportFolderPathLineEdit.currentPath = str(tmp_path)
    ui.applyButton.click()
    assert widget.operation is None and not widget.confirmations
    assert ui.statusLabel.text.startswith("Export needs a volume loaded from Slicer's DICOM database")


def test_connect_anonymize_explain_export_reset(widget, server, tmp_path) -> None:
    ui = widget.ui
    ui.serverUrlComboBox.setCurrentText(server.url)
    ui.connectButton.click()
    assert ui.applyButton.text == "Cancel"
    run_to_end(widget)
    info = widget.logic.serverInfo
    assert info is not None and "anonymize" in ui.serverStatusLabel.text
    assert ui.targetComboBox._items == info.classes and ui.serverUrlComboBox._items[0] == server.url

    dicom = load_dicom(sorted((server.studies / "images").glob("*.dcm"))[0])
    ui.inputVolumeSelector.setCurrentNode(dicom)
    assert "export available" in ui.inputInfoLabel.text
    ui.applyButton.click()
    fake_widgets.QMessageBox.answer = fake_widgets.QMessageBox.No  # consent was given once for the session
    run_to_end(widget)
    assert "Synthetic identity seed" in ui.resultLabel.text, ui.statusLabel.text
    seed = json.loads(ui.detailsTextEdit.toPlainText())["seed"]
    assert widget.logic.parameters().seed == seed == ui.seedSpinBox.value

    ui.anotherIdentityButton.click()
    run_to_end(widget)
    assert json.loads(ui.detailsTextEdit.toPlainText())["seed"] != seed
    assert len(widget.logic.outputNodes()) == 2

    ui.operationTabWidget.currentIndex = 2
    ui.kSpinBox.value = 2
    ui.applyButton.click()
    run_to_end(widget)
    assert "Case 2:" in ui.resultLabel.text and ui.caseSliderWidget.enabled and ui.caseSliderWidget.maximum == 2
    ui.caseSliderWidget.value = 2
    assert ui.caseInfoLabel.text.startswith("Similar case 2")

    ui.operationTabWidget.currentIndex = 3
    ui.exportFolderPathLineEdit.currentPath = str(tmp_path / "out")
    ui.applyButton.click()
    assert widget.confirmations and str(tmp_path / "out") in widget.confirmations[0]
    run_to_end(widget)
    assert "Exported 1 file(s)" in ui.resultLabel.text, ui.statusLabel.text
    assert list((tmp_path / "out").rglob("*.dcm"))

    ui.resetButton.click()
    assert widget.logic.outputNodes() == [] and ui.resultLabel.text == ""
    assert len(fake_widgets.QMessageBox.asked) == 1  # asked once for this server in this session


def test_a_secured_server_asks_for_a_login_and_again_after_a_wrong_password(widget, auth_server, monkeypatch) -> None:
    from CaseAnonymizerLib import TokenStore

    TokenStore.forget_all()
    ui = widget.ui
    answers = [("alice", "wrong"), ("alice", "secret")]
    asked: list[tuple[str, str]] = []
    monkeypatch.setattr(widget, "askCredentials", lambda: asked.append(answers[len(asked)]) or asked[-1])
    ui.serverUrlComboBox.setCurrentText(auth_server.url)
    ui.connectButton.click()
    run_to_end(widget)  # 401 → asked → wrong password → asked again → logged in
    assert asked == answers
    assert ui.serverStatusLabel.text.startswith(f"Logged in to {auth_server.url} as alice.")
    assert "anonymize" in ui.serverStatusLabel.text and widget.logic.loggedInAs() == "alice"
    assert ui.statusLabel.text == "Done."
    # a cancelled login says so and sends nothing
    monkeypatch.setattr(widget, "askCredentials", lambda: None)
    ui.loginButton.click()
    assert widget.operation is None and ui.statusLabel.text == "Not logged in."
    assert widget.logic.loggedInAs() == "alice"  # the earlier login stays
    TokenStore.forget_all()
