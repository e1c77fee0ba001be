"""The module's parameters, stored in its parameter node (a ``vtkMRMLScriptedModuleNode``, saved with the scene).

:data:`PARAMETERS` is the schema: name, type and default of every parameter. :class:`Parameters` gives
typed access to a parameter node (duck-typed: ``GetParameter``/``SetParameter`` and node references),
and :data:`BINDINGS` says which widget of ``Resources/UI/CaseAnonymizer.ui`` edits which parameter
through which widget property. Tests check the three against each other and against the ``.ui`` file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "BINDINGS",
    "DEID_OPTIONS",
    "NODE",
    "NODES",
    "PARAMETERS",
    "PROPERTY_KINDS",
    "Binding",
    "Param",
    "Parameters",
    "signal_for",
]

NODE = "node"  # a single node reference
NODES = "nodes"  # a list of node references (same role)


@dataclass(frozen=True)
class Param:
    """One parameter: ``type`` is ``str``, ``int``, ``float``, ``bool``, :data:`NODE` or :data:`NODES`."""

    name: str
    type: Any
    default: Any = None
    doc: str = ""


#: De-identification options of the export (the flags of ``monai-anon deid``), with their labels.
DEID_OPTIONS: dict[str, str] = {
    "retain_modified_dates": "Keep dates, shifted",
    "retain_full_dates": "Keep full dates",
    "retain_patient_characteristics": "Keep patient characteristics (sex, age, size, weight)",
    "retain_device_identity": "Keep device identity",
    "retain_institution_identity": "Keep institution identity",
    "clean_descriptors": "Keep descriptions, cleaned",
    "retain_uids": "Keep UIDs",
    "retain_safe_private": "Keep safe private attributes",
}


def _camel(option: str) -> str:
    head, *rest = option.split("_")
    return head + "".join(w.title() for w in rest)


PARAMETERS: dict[str, Param] = {p.name: p for p in [
    # inputs and connection
    Param("inputVolume", NODE, doc="the volume to anonymize (any scalar volume; DICOM-loaded for export)"),
    Param("serverUrl", str, "http://127.0.0.1:8000", "server address"),
    Param("timeoutSeconds", int, 120, "how long to wait for an answer"),
    Param("caBundle", str, "", "CA bundle for HTTPS servers with a private certificate authority"),
    Param("operationIndex", int, 0, "0 anonymize, 1 counterfactual, 2 explain, 3 export"),
    # anonymize
    Param("randomSeed", bool, True, "draw a new synthetic identity on each run"),
    Param("seed", int, 0, "synthetic identity seed when not random"),
    Param("candidates", int, 8, "synthetic identities drawn to find one far from every training identity"),
    Param("anonymizeMode", str, "full", "full or residual"),
    # counterfactual
    Param("target", str, "", "target class of the counterfactual"),
    Param("counterfactualMode", str, "residual", "residual or full"),
    # explain
    Param("k", int, 3, "number of similar training cases"),
    Param("currentCase", int, 1, "similar case shown (1..k)"),
    # export
    Param("exportToFolder", bool, True),
    Param("exportFolder", str, ""),
    Param("exportToDatabase", bool, False),
    Param("exportToPacs", bool, False),
    Param("headersOnly", bool, False, "keep original pixels (headers de-identified only)"),
    *[Param(_camel(opt), bool, False, label) for opt, label in DEID_OPTIONS.items()],
    # results (not edited by widgets)
    Param("anonymizedVolume", NODE),
    Param("previewInput", NODE, doc="the input of the anonymized preview (its seed is reused by the export)"),
    Param("anonymizedDifference", NODE),
    Param("counterfactualVolume", NODE),
    Param("counterfactualDifference", NODE),
    Param("caseVolumes", NODES),
    Param("anonymizeDetails", str, "", "JSON details of the last anonymization"),
    Param("counterfactualDetails", str, "", "JSON details of the last counterfactual"),
    Param("explainDetails", str, "", "JSON details of the last explanation"),
    Param("exportDetails", str, "", "JSON summary of the last export"),
    Param("savedLayout", int, -1, "layout to restore on Reset (-1: none saved)"),
]}


@dataclass(frozen=True)
class Binding:
    """Widget ``widget`` (objectName in the .ui) edits parameter ``parameter`` through ``property``."""

    widget: str
    parameter: str
    property: str


#: widget property -> (widget classes that have it, parameter types it can hold)
PROPERTY_KINDS: dict[str, tuple[tuple[str, ...], tuple[Any, ...]]] = {
    "currentNode": (("qMRMLNodeComboBox",), (NODE,)),
    "currentText": (("QComboBox", "ctkComboBox"), (str,)),
    "currentPath": (("ctkPathLineEdit",), (str,)),
    "value": (("QSpinBox", "QDoubleSpinBox", "ctkSliderWidget", "ctkDoubleSpinBox", "QSlider"), (int, float)),
    "checked": (("QCheckBox", "QRadioButton", "ctkCheckBox"), (bool,)),
    "currentIndex": (("QTabWidget", "QStackedWidget", "QComboBox"), (int,)),
}

#: (widget class, property) -> the Qt signal that reports an edit (PythonQt ``connect`` signature)
_SIGNALS: dict[str, str] = {
    "currentNode": "currentNodeChanged(vtkMRMLNode*)",
    "currentText": "currentTextChanged(QString)",
    "currentPath": "currentPathChanged(QString)",
    "checked": "toggled(bool)",
    "currentIndex": "currentChanged(int)",
}
_VALUE_SIGNALS: dict[str, str] = {
    "QSpinBox": "valueChanged(int)",
    "QSlider": "valueChanged(int)",
    "QDoubleSpinBox": "valueChanged(double)",
    "ctkDoubleSpinBox": "valueChanged(double)",
    "ctkSliderWidget": "valueChanged(double)",
}


def signal_for(widget_class: str, prop: str) -> str:
    """The signal of ``widget_class`` that tells that ``prop`` changed (KeyError if unknown)."""
    if prop == "value":
        return _VALUE_SIGNALS[widget_class]
    if prop == "currentIndex" and widget_class == "QComboBox":
        return "currentIndexChanged(int)"
    return _SIGNALS[prop]


BINDINGS: tuple[Binding, ...] = (
    Binding("inputVolumeSelector", "inputVolume", "currentNode"),
    Binding("serverUrlComboBox", "serverUrl", "currentText"),
    Binding("timeoutSpinBox", "timeoutSeconds", "value"),
    Binding("caBundlePathLineEdit", "caBundle", "currentPath"),
    Binding("operationTabWidget", "operationIndex", "currentIndex"),
    Binding("randomSeedCheckBox", "randomSeed", "checked"),
    Binding("seedSpinBox", "seed", "value"),
    Binding("candidatesSpinBox", "candidates", "value"),
    Binding("anonymizeModeComboBox", "anonymizeMode", "currentText"),
    Binding("targetComboBox", "target", "currentText"),
    Binding("counterfactualModeComboBox", "counterfactualMode", "currentText"),
    Binding("kSpinBox", "k", "value"),
    Binding("caseSliderWidget", "currentCase", "value"),
    Binding("exportToFolderCheckBox", "exportToFolder", "checked"),
    Binding("exportFolderPathLineEdit", "exportFolder", "currentPath"),
    Binding("exportToDatabaseCheckBox", "exportToDatabase", "checked"),
    Binding("exportToPacsCheckBox", "exportToPacs", "checked"),
    Binding("headersOnlyCheckBox", "headersOnly", "checked"),
    *[Binding(_camel(opt) + "CheckBox", _camel(opt), "checked") for opt in DEID_OPTIONS],
)


def _to_text(ptype: Any, value: Any) -> str:
    if ptype is bool:
        return "true" if value else "false"
    if ptype is int:
        return str(round(float(value)))
    if ptype is float:
        return repr(float(value))
    return "" if value is None else str(value)


def _from_text(ptype: Any, text: str | None, default: Any) -> Any:
    if text is None:
        return default
    if ptype is str:
        return text
    if text == "":
        return default
    try:
        if ptype is bool:
            return text.strip().lower() in ("1", "true", "yes", "on")
        if ptype is int:
            return round(float(text))
        if ptype is float:
            return float(text)
    except ValueError:
        return default
    return text


class Parameters:
    """Typed view of a parameter node: ``params.seed = 3``; ``params.inputVolume`` is a node or None."""

    def __init__(self, node: Any) -> None:
        object.__setattr__(self, "node", node)

    def __getattr__(self, name: str) -> Any:
        try:
            spec = PARAMETERS[name]
        except KeyError:
            raise AttributeError(f"no parameter {name!r}") from None
        node = object.__getattribute__(self, "node")
        if spec.type == NODE:
            return node.GetNodeReference(name)
        if spec.type == NODES:
            return [node.GetNthNodeReference(name, i) for i in range(node.GetNumberOfNodeReferences(name))]
        text = node.GetParameter(name) if node.HasParameter(name) else None
        return _from_text(spec.type, text, spec.default)

    def __setattr__(self, name: str, value: Any) -> None:
        try:
            spec = PARAMETERS[name]
        except KeyError:
            raise AttributeError(f"no parameter {name!r}") from None
        node = self.node
        if spec.type == NODE:
            node.SetNodeReferenceID(name, value.GetID() if value is not None else None)
        elif spec.type == NODES:
            node.RemoveNodeReferenceIDs(name)
            for item in value or []:
                node.AddNodeReferenceID(name, item.GetID())
        else:
            node.SetParameter(name, _to_text(spec.type, value))

    def is_set(self, name: str) -> bool:
        """True when the node holds a value for ``name`` (otherwise reading gives the default)."""
        spec = PARAMETERS[name]
        if spec.type in (NODE, NODES):
            return bool(self.node.GetNodeReferenceID(name))
        return bool(self.node.HasParameter(name))

    def set_defaults(self) -> None:
        """Write defaults for every scalar parameter that has no value yet (a new or older scene)."""
        missing = [name for name, spec in PARAMETERS.items()
                   if spec.type not in (NODE, NODES) and spec.default is not None and not self.is_set(name)]
        if not missing:
            return
        was_modifying = self.node.StartModify()  # one Modified event for all of them
        for name in missing:
            setattr(self, name, PARAMETERS[name].default)
        self.node.EndModify(was_modifying)

    def deid_options(self) -> dict[str, bool]:
        """The export's de-identification flags, as the server's ``export`` task names them."""
        return {opt: bool(getattr(self, _camel(opt))) for opt in DEID_OPTIONS}
