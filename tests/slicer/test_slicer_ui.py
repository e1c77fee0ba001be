"""The module's .ui file against the code: widget names, parameter-node bindings, offscreen loading."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

from CaseAnonymizerLib.parameters import BINDINGS, NODE, PARAMETERS, PROPERTY_KINDS, signal_for
from conftest import MODULE_DIR, UI_FILE
from peers import require_module

MODULE_FILE = MODULE_DIR / "CaseAnonymizer.py"


def ui_widgets() -> dict[str, str]:
    """objectName -> class of every widget in the .ui file."""
    root = ET.parse(UI_FILE).getroot()
    return {w.get("name"): w.get("class") for w in root.iter("widget")}


def used_ui_names() -> set[str]:
    """Every ``self.ui.<name>`` the module code uses."""
    tree = ast.parse(MODULE_FILE.read_text())
    names = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "ui"
                and isinstance(node.value.value, ast.Name) and node.value.value.id == "self"):
            names.add(node.attr)
    return names


def test_every_widget_the_module_uses_is_in_the_ui() -> None:
    widgets = ui_widgets()
    used = used_ui_names()
    assert used, "the module uses no self.ui widgets?"
    missing = sorted(used - set(widgets))
    assert not missing, f"used in CaseAnonymizer.py but absent from the .ui: {missing}"


def test_bindings_match_the_ui_and_the_parameters() -> None:
    widgets = ui_widgets()
    bound_params = set()
    for b in BINDINGS:
        assert b.widget in widgets, f"{b.widget} is not in the .ui"
        classes, types = PROPERTY_KINDS[b.property]
        assert widgets[b.widget] in classes, f"{b.widget} is a {widgets[b.widget]}, which has no {b.property}"
        assert b.parameter in PARAMETERS, f"{b.widget} edits unknown parameter {b.parameter}"
        assert PARAMETERS[b.parameter].type in types, f"{b.parameter} cannot hold a {b.property}"
        assert signal_for(widgets[b.widget], b.property)
        assert b.parameter not in bound_params, f"{b.parameter} is bound twice"
        bound_params.add(b.parameter)
    assert len({b.widget for b in BINDINGS}) == len(BINDINGS), "a widget is bound twice"


def test_every_user_setting_has_a_widget() -> None:
    """Parameters with defaults that are not results are edited by some widget."""
    results = {"anonymizeDetails", "counterfactualDetails", "explainDetails", "exportDetails", "savedLayout"}
    bound = {b.parameter for b in BINDINGS}
    for name, spec in PARAMETERS.items():
        if spec.type != NODE and spec.default is not None and name not in results:
            assert name in bound, f"parameter {name} has no widget"


def test_operation_tabs_follow_the_module_order(module) -> None:
    root = ET.parse(UI_FILE).getroot()
    tabs = next(w for w in root.iter("widget") if w.get("name") == "operationTabWidget")
    names = [w.get("name") for w in tabs.findall("widget")]
    assert names == [f"{op}Tab" for op in module.OPERATIONS]
    assert set(module.APPLY_TEXTS) == set(module.OPERATIONS)


def test_mode_choices_in_the_ui_are_the_contracts() -> None:
    root = ET.parse(UI_FILE).getroot()

    def items(name: str) -> list[str]:
        combo = next(w for w in root.iter("widget") if w.get("name") == name)
        return [i.find("property/string").text for i in combo.findall("item")]

    assert items("anonymizeModeComboBox") == ["full", "residual"]  # docs/rest.md: full is the default
    assert items("counterfactualModeComboBox") == ["residual", "full"]  # residual is the default
    assert PARAMETERS["anonymizeMode"].default == "full" and PARAMETERS["counterfactualMode"].default == "residual"


def test_ui_loads_offscreen_with_qt() -> None:
    """Load the .ui with PySide6's QUiLoader (Slicer's custom widgets fall back to their Qt base class)."""
    require_module("PySide6.QtUiTools", "pip install -e .[test] (PySide6-Essentials)")
    script = f"""
import sys
from PySide6.QtCore import QFile
from PySide6.QtUiTools import QUiLoader
from PySide6.QtWidgets import QApplication, QWidget
app = QApplication([])
f = QFile({str(UI_FILE)!r})
assert f.open(QFile.ReadOnly)
w = QUiLoader().load(f)
assert w is not None, "QUiLoader returned nothing"
print("\\n".join(sorted(c.objectName() for c in w.findChildren(QWidget) if c.objectName())))
"""
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    loaded = set(result.stdout.split())
    expected = {name for name, cls in ui_widgets().items() if cls != "QWidget" or name.endswith("Tab")}
    expected.discard("CaseAnonymizer")
    assert expected <= loaded, sorted(expected - loaded)
