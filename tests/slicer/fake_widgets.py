"""Strict stand-ins for the Qt/CTK/MRML widgets of ``CaseAnonymizer.ui``, built from the .ui file itself.

They follow PythonQt's conventions (properties as attributes, ``connect("signal(args)", slot)``) and
Qt's behaviour where the Widget relies on it: a setter emits the change signal only when the value
changes and signals are not blocked; spin boxes and sliders clamp to their range. Unknown attributes
raise ``AttributeError``, so a misspelt widget property in the module fails the test.
"""

from __future__ import annotations

import inspect
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, ClassVar

# class -> {property: (default, signal emitted on change or None)}
_PROPS: dict[str, dict[str, tuple[Any, str | None]]] = {
    "QWidget": {"enabled": (True, None), "visible": (True, None), "toolTip": ("", None)},
    "QLabel": {"text": ("", None), "wordWrap": (False, None), "textInteractionFlags": (0, None)},
    "QPushButton": {"text": ("", None)},
    "QCheckBox": {"text": ("", None), "checked": (False, "toggled(bool)")},
    "QSpinBox": {"value": (0, "valueChanged(int)"), "minimum": (0, None), "maximum": (99, None),
                 "specialValueText": ("", None)},
    "QComboBox": {"editable": (False, None), "insertPolicy": (0, None)},
    "QTabWidget": {"currentIndex": (0, "currentChanged(int)")},
    "QProgressBar": {"value": (0, None), "textVisible": (True, None)},
    "QPlainTextEdit": {"readOnly": (False, None), "lineWrapMode": (0, None), "placeholderText": ("", None)},
    "QGroupBox": {"title": ("", None)},
    "ctkCollapsibleButton": {"text": ("", None), "collapsed": (False, None)},
    "ctkCollapsibleGroupBox": {"title": ("", None), "collapsed": (False, None)},
    "ctkPathLineEdit": {"currentPath": ("", "currentPathChanged(QString)"), "filters": (0, None),
                        "settingKey": ("", None)},
    "ctkSliderWidget": {"value": (0.0, "valueChanged(double)"), "minimum": (0.0, None), "maximum": (99.0, None),
                        "decimals": (2, None), "singleStep": (1.0, None), "pageStep": (1.0, None)},
    "qMRMLNodeComboBox": {"nodeTypes": ([], None), "showChildNodeTypes": (True, None), "addEnabled": (True, None),
                          "removeEnabled": (True, None), "noneEnabled": (False, None), "noneDisplay": ("", None)},
    "qMRMLWidget": {},
}
_BASES = {"QLabel": "QWidget", "QPushButton": "QWidget", "QCheckBox": "QWidget", "QSpinBox": "QWidget",
          "QComboBox": "QWidget", "QTabWidget": "QWidget", "QProgressBar": "QWidget", "QPlainTextEdit": "QWidget",
          "QGroupBox": "QWidget", "ctkCollapsibleButton": "QWidget", "ctkCollapsibleGroupBox": "QGroupBox",
          "ctkPathLineEdit": "QWidget", "ctkSliderWidget": "QWidget", "qMRMLNodeComboBox": "QWidget",
          "qMRMLWidget": "QWidget"}


def _props(cls: str) -> dict[str, tuple[Any, str | None]]:
    out: dict[str, tuple[Any, str | None]] = {}
    while cls:
        out = {**_PROPS.get(cls, {}), **out}
        cls = _BASES.get(cls, "")
    return out


class FakeWidget:
    """One widget of the .ui."""

    def __init__(self, cls: str, name: str) -> None:
        d = self.__dict__
        d["_cls"], d["_name"], d["_blocked"], d["_slots"] = cls, name, False, {}
        d["_props"] = {k: v[0] for k, v in _props(cls).items()}
        d["_signals"] = {k: v[1] for k, v in _props(cls).items()}
        d["_items"], d["_text"], d["_node"], d["_plain"] = [], "", None, ""
        d["_range"] = (0, 100)

    # -- PythonQt basics ------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._name

    def className(self) -> str:
        return self._cls

    def connect(self, signal: str, slot: Any) -> None:
        known = set(self._signals.values()) | {"clicked(bool)", "clicked()", "currentTextChanged(QString)",
                                              "currentIndexChanged(int)", "currentNodeChanged(vtkMRMLNode*)"}
        if signal not in known:
            raise AttributeError(f"{self._cls} {self._name} has no signal {signal}")
        self._slots.setdefault(signal, []).append(slot)

    def emit(self, signal: str, *args: Any) -> None:
        if self._blocked:
            return
        for slot in list(self._slots.get(signal, [])):
            slot(*args[:_arity(slot, len(args))])  # PythonQt passes only the arguments a slot accepts

    def blockSignals(self, block: bool) -> bool:
        was = self._blocked
        self.__dict__["_blocked"] = bool(block)
        return was

    def __getattr__(self, name: str) -> Any:
        props = self.__dict__["_props"]
        if name in props:
            return props[name]
        if name == "currentText" and self._cls == "QComboBox":
            return self._text
        raise AttributeError(f"{self._cls} {self._name} has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in self._props:
            raise AttributeError(f"{self._cls} {self._name} has no property {name!r}")
        if name == "value" and self._cls in ("QSpinBox", "ctkSliderWidget"):
            value = min(max(value, self._props["minimum"]), self._props["maximum"])
            value = int(value) if self._cls == "QSpinBox" else float(value)
        old = self._props[name]
        self._props[name] = value
        if name in ("minimum", "maximum") and "value" in self._props:
            self.__setattr__("value", self._props["value"])
        signal = self._signals.get(name)
        if signal and old != value:
            self.emit(signal, value)

    # -- buttons ----------------------------------------------------------------------------------------
    def click(self) -> None:
        if not self._props.get("enabled", True):
            return
        if self._cls == "QCheckBox":
            self.checked = not self.checked
        self.emit("clicked(bool)", False)

    # -- combo boxes ------------------------------------------------------------------------------------
    def addItems(self, items: list[str]) -> None:
        for item in items:
            self.addItem(item)

    def addItem(self, item: str) -> None:
        self._items.append(str(item))
        if len(self._items) == 1 and not self._text:
            self.setCurrentText(str(item))

    def clear(self) -> None:
        self._items.clear()
        self.setCurrentText("")

    def findText(self, text: str) -> int:
        return self._items.index(text) if text in self._items else -1

    def count(self) -> int:
        return len(self._items)

    def setCurrentText(self, text: str) -> None:
        if not self._props.get("editable") and text and text not in self._items:
            return  # a non-editable combo box only selects existing items
        if text != self._text:
            self.__dict__["_text"] = text
            self.emit("currentTextChanged(QString)", text)

    # -- node selector ------------------------------------------------------------------------------------
    def setMRMLScene(self, scene: Any) -> None:
        self.__dict__["_scene"] = scene

    def currentNode(self) -> Any:
        return self._node

    def setCurrentNode(self, node: Any) -> None:
        if (node.GetID() if node else None) != (self._node.GetID() if self._node else None):
            self.__dict__["_node"] = node
            self.emit("currentNodeChanged(vtkMRMLNode*)", node)

    # -- progress bar and text ----------------------------------------------------------------------------
    def setRange(self, lo: int, hi: int) -> None:
        self.__dict__["_range"] = (lo, hi)

    def setPlainText(self, text: str) -> None:
        self.__dict__["_plain"] = text

    def toPlainText(self) -> str:
        return self._plain


def _arity(slot: Any, available: int) -> int:
    try:
        params = inspect.signature(slot).parameters.values()
    except (TypeError, ValueError):
        return available
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return available
    return min(available, sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params))


class FakeLayout:
    def __init__(self) -> None:
        self.widgets: list[Any] = []

    def addWidget(self, widget: Any) -> None:
        self.widgets.append(widget)


class FakeUi:
    """The root widget of a loaded .ui and its named children."""

    def __init__(self, path: str | Path) -> None:
        root = ET.parse(path).getroot()
        self.children: dict[str, FakeWidget] = {}
        for element in root.iter("widget"):
            widget = FakeWidget(element.get("class"), element.get("name"))
            for prop in element.findall("property"):
                value = _xml_value(prop)
                if value is not None and prop.get("name") in widget._props:
                    widget._props[prop.get("name")] = value
            for item in element.findall("item"):
                text = item.find("property/string")
                widget._items.append(text.text if text is not None else "")
            if widget._items:
                widget.__dict__["_text"] = widget._items[0]
            self.children[element.get("name")] = widget
        self.root = self.children[root.find("widget").get("name")]

    def variables(self) -> Any:
        ui = type("ui", (), {})()
        for name, widget in self.children.items():
            setattr(ui, name, widget)
        return ui


def _xml_value(prop: ET.Element) -> Any:
    child = next(iter(prop), None)
    if child is None:
        return None
    if child.tag == "bool":
        return child.text == "true"
    if child.tag == "number":
        return int(child.text)
    if child.tag == "double":
        return float(child.text)
    if child.tag == "string":
        return child.text or ""
    if child.tag == "stringlist":
        return [s.text for s in child]
    return None


class QMessageBox:
    """Answers with :attr:`answer`; records what it was asked."""

    Yes, No, Ok, Cancel, Question = 0x4000, 0x10000, 0x400, 0x400000, 4
    answer: ClassVar[int] = 0x4000
    remember: ClassVar[bool] = False
    asked: ClassVar[list[str]] = []

    def __init__(self, parent: Any = None) -> None:
        self.text = ""
        self.checkbox: Any = None

    def setWindowTitle(self, title: str) -> None:
        self.title = title

    def setIcon(self, icon: Any) -> None:
        pass

    def setText(self, text: str) -> None:
        self.text = text

    def setStandardButtons(self, buttons: Any) -> None:
        pass

    def setDefaultButton(self, button: Any) -> None:
        pass

    def setCheckBox(self, box: Any) -> None:
        self.checkbox = box

    def exec_(self) -> int:
        type(self).asked.append(self.text)
        if self.checkbox is not None:
            self.checkbox.checked = type(self).remember
        return type(self).answer


class QCheckBox:
    def __init__(self, text: str = "") -> None:
        self.text = text
        self.checked = False
