"""The module's views: side-by-side layouts as Slicer layout descriptions (XML text) and the display window of
difference maps. No Qt, no MRML."""

from __future__ import annotations

from xml.sax.saxutils import escape

import numpy as np

__all__ = ["COMPARE_LAYOUT_ID", "EXPLAIN_LAYOUT_ID", "VIEWS", "VIEW_GROUP", "difference_window", "layout_xml"]

#: Layout ids registered with the layout node (values above Slicer's built-in layouts).
COMPARE_LAYOUT_ID = 8451  # original | result | difference
EXPLAIN_LAYOUT_ID = 8452  # original | similar case
#: View group of the module's views: slice linking stays among them and never moves the user's views.
VIEW_GROUP = 5

#: role -> (slice view name, view label, colour)
VIEWS: dict[str, tuple[str, str, str]] = {
    "original": ("CaseAnonymizerOriginal", "O", "#4A90D9"),
    "result": ("CaseAnonymizerResult", "R", "#5CB85C"),
    "difference": ("CaseAnonymizerDifference", "D", "#D9534F"),
}


def layout_xml(roles: tuple[str, ...], orientation: str = "Axial") -> str:
    """A horizontal row of slice views for ``roles`` (keys of :data:`VIEWS`), all in one view group."""
    items = []
    for role in roles:
        name, label, color = VIEWS[role]
        items.append(
            f' <item><view class="vtkMRMLSliceNode" singletontag="{escape(name)}">'
            f'<property name="orientation" action="default">{escape(orientation)}</property>'
            f'<property name="viewlabel" action="default">{escape(label)}</property>'
            f'<property name="viewcolor" action="default">{escape(color)}</property>'
            f'<property name="viewgroup" action="default">{VIEW_GROUP}</property>'
            f"</view></item>")
    return '<layout type="horizontal">\n' + "\n".join(items) + "\n</layout>"


def difference_window(diff: np.ndarray) -> tuple[float, float]:
    """``(window, level)`` that shows a difference map symmetrically around zero."""
    finite = np.abs(diff[np.isfinite(diff)]) if diff.size else np.zeros(1)
    peak = float(np.percentile(finite, 99.5)) if finite.size else 0.0
    if peak <= 0.0:
        peak = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    return 2.0 * peak, 0.0
