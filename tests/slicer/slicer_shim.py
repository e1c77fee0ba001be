"""A thin stand-in for the parts of desktop Slicer that the ``slicer-core`` wheel lacks.

``slicer-core`` gives real MRML (scene, volume/storage nodes, subject hierarchy, layout logic) but no Qt,
no ``slicer.app``, no ``slicer.mrmlScene`` and no ``slicer.ScriptedLoadableModule``. This module adds
just enough so that ``CaseAnonymizer.py`` imports and its Logic (``CaseAnonymizerLib/logic.py``) runs against
real MRML:

- ``qt``: ``QSettings`` (dict-backed) and ``QTimer`` (inert); the Widget's widgets come from ``fake_widgets.py``.
- ``ctk``: an empty module.
- ``slicer.app``: ``temporaryPath`` and ``applicationLogic()``.
- ``slicer.ScriptedLoadableModule``: minimal base classes with Slicer's parameter-node behaviour.
- ``slicer.mrmlScene``: a scene with the subject hierarchy, layout and colour logics attached, as in Slicer.
- ``slicer.dicomDatabase``: a dict from SOP Instance UID to file, for ``fileForInstance``.

Nothing here talks to a network or replaces MRML.
"""

from __future__ import annotations

import logging
import os
import sys
import types
import unittest
from typing import Any, ClassVar

import slicer


class QSettings:
    """``qt.QSettings`` with one process-wide dict store (``QSettings.store``)."""

    store: ClassVar[dict[str, Any]] = {}

    def value(self, key: str, default: Any = None) -> Any:
        return self.store.get(key, default)

    def setValue(self, key: str, value: Any) -> None:
        self.store[key] = value

    def remove(self, key: str) -> None:
        self.store.pop(key, None)


class QTimer:
    """An inert ``qt.QTimer`` (the Widget's polling is not driven in these tests)."""

    def setInterval(self, msec: int) -> None:
        self.interval = msec

    def connect(self, signal: str, slot: Any) -> None:
        self.slot = slot

    def start(self, msec: int | None = None) -> None:
        pass

    def stop(self) -> None:
        pass


class App:
    """``slicer.app``: the few members the module's Logic uses."""

    def __init__(self, temporary_path: str) -> None:
        self.temporaryPath = temporary_path
        self._app_logic: Any = None

    def applicationLogic(self) -> Any:
        return self._app_logic

    def processEvents(self) -> None:
        pass


class DicomDatabase:
    """``slicer.dicomDatabase``: only ``fileForInstance`` and ``isOpen``."""

    def __init__(self) -> None:
        self.files: dict[str, str] = {}
        self.isOpen = True

    def fileForInstance(self, uid: str) -> str:
        return self.files.get(uid, "")


# -- ScriptedLoadableModule --
class ScriptedLoadableModule:
    def __init__(self, parent: Any) -> None:
        self.parent = parent
        self.moduleName = self.__class__.__name__


class _Layout:
    def __init__(self) -> None:
        self.widgets: list[Any] = []

    def addWidget(self, widget: Any) -> None:
        self.widgets.append(widget)


class ScriptedLoadableModuleWidget:
    def __init__(self, parent: Any = None) -> None:
        self.parent = parent if parent is not None else types.SimpleNamespace(isEntered=True)
        self.moduleName = self.__class__.__name__.removesuffix("Widget")
        self.layout = _Layout()
        self.developerMode = False

    def resourcePath(self, filename: str) -> str:
        module_file = sys.modules[type(self).__module__].__file__
        return os.path.join(os.path.dirname(module_file), "Resources", filename)

    def setup(self) -> None:
        pass


class ScriptedLoadableModuleLogic:
    """Slicer's parameter-node behaviour: one singleton ``vtkMRMLScriptedModuleNode`` per module."""

    def __init__(self, parent: Any = None) -> None:
        self.moduleName = self.__class__.__name__.removesuffix("Logic")
        self.isSingletonParameterNode = True

    def getParameterNode(self) -> Any:
        node = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
        if node is not None:
            return node
        return slicer.mrmlScene.AddNode(self.createParameterNode())

    def createParameterNode(self) -> Any:
        node = slicer.vtkMRMLScriptedModuleNode()
        node.SetSingletonTag(self.moduleName)
        node.SetSaveWithScene(True)
        node.SetHideFromEditors(True)
        node.SetName(slicer.mrmlScene.GetUniqueNameByString(self.moduleName))
        node.SetAttribute("ModuleName", self.moduleName)
        return node


class ScriptedLoadableModuleTest(unittest.TestCase):
    messageDelay = 0

    def delayDisplay(self, message: str, msec: int | None = None) -> None:
        logging.getLogger("CaseAnonymizerTest").info(message)

    def takeScreenshot(self, name: str, description: str, type: int = -1) -> None:
        pass


def new_scene() -> Any:
    """A fresh ``slicer.mrmlScene`` with the logics Slicer attaches at start-up."""
    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    app_logic = slicer.vtkMRMLApplicationLogic()
    app_logic.SetMRMLScene(scene)
    color_logic = slicer.vtkSlicerColorLogic()
    color_logic.SetMRMLApplicationLogic(app_logic)
    color_logic.SetMRMLScene(scene)
    sh_logic = slicer.vtkSlicerSubjectHierarchyModuleLogic()
    sh_logic.SetMRMLScene(scene)
    layout_logic = slicer.vtkMRMLLayoutLogic()
    layout_logic.SetMRMLScene(scene)
    layout_logic.GetLayoutNode().SetViewArrangement(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpView)
    slicer.app._app_logic = app_logic
    slicer.app._keep = (color_logic, sh_logic, layout_logic)  # logics live as long as their scene
    return scene


def install(temporary_path: str) -> None:
    """Install the stand-ins (idempotent) and create a fresh scene."""
    if "qt" not in sys.modules:
        qt = types.ModuleType("qt")
        qt.QSettings = QSettings
        qt.QTimer = QTimer
        sys.modules["qt"] = qt
    if "ctk" not in sys.modules:
        sys.modules["ctk"] = types.ModuleType("ctk")
    if "slicer.ScriptedLoadableModule" not in sys.modules:
        slm = types.ModuleType("slicer.ScriptedLoadableModule")
        for cls in (ScriptedLoadableModule, ScriptedLoadableModuleWidget, ScriptedLoadableModuleLogic,
                    ScriptedLoadableModuleTest):
            setattr(slm, cls.__name__, cls)
        sys.modules["slicer.ScriptedLoadableModule"] = slm
        slicer.ScriptedLoadableModule = slm
    if not isinstance(getattr(slicer, "app", None), App):
        slicer.app = App(temporary_path)
    slicer.app.temporaryPath = temporary_path
    slicer.dicomDatabase = DicomDatabase()
    new_scene()
