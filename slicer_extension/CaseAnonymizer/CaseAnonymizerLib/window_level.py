"""Window/level linked across display nodes, so that the original and the results show the same intensities."""

from __future__ import annotations

from typing import Any

import vtk
from slicer.util import VTKObservationMixin

__all__ = ["WindowLevelLink"]


class WindowLevelLink(VTKObservationMixin):
    """Keeps window/level equal across display nodes (original and results share intensity units)."""

    def __init__(self) -> None:
        VTKObservationMixin.__init__(self)
        self._nodes: list[Any] = []
        self._updating = False

    def link(self, displayNodes: list[Any]) -> None:
        """Link these display nodes (replaces the previous link); the first one's window/level wins."""
        self.clear()
        unique: dict[str, Any] = {}
        for node in displayNodes:
            if node is not None:
                unique.setdefault(node.GetID(), node)
        self._nodes = list(unique.values())
        if not self._nodes:
            return
        first = self._nodes[0]
        for node in self._nodes[1:]:
            node.SetAutoWindowLevel(False)
            node.SetWindowLevel(first.GetWindow(), first.GetLevel())
        for node in self._nodes:
            self.addObserver(node, vtk.vtkCommand.ModifiedEvent, self._onModified)

    def clear(self) -> None:
        self.removeObservers()
        self._nodes = []

    @property
    def nodes(self) -> list[Any]:
        return list(self._nodes)

    def _onModified(self, caller: Any, event: Any) -> None:
        if self._updating:
            return
        window, level = caller.GetWindow(), caller.GetLevel()
        self._updating = True
        try:
            for node in self._nodes:
                if node is caller:
                    continue
                if abs(node.GetWindow() - window) > 1e-6 or abs(node.GetLevel() - level) > 1e-6:
                    node.SetAutoWindowLevel(False)
                    node.SetWindowLevel(window, level)
        finally:
            self._updating = False
