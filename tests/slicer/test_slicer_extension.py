"""The extension's files: Extension Wizard layout, metadata, index description, icon, imports."""

from __future__ import annotations

import ast
import json
import re
import struct

from conftest import EXTENSION, MODULE_DIR

#: CaseAnonymizerLib modules that import Slicer (MRML, translations); every other one is plain Python.
SLICER_LIB_MODULES = {"logic", "window_level", "i18n"}
REQUIRED_METADATA = ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS", "DEPENDS")


def cmake_sets(text: str) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in re.finditer(r'set\((\w+)\s+"([^"]*)"\)', text)}


def test_top_level_cmake_has_complete_extension_metadata() -> None:
    text = (EXTENSION / "CMakeLists.txt").read_text()
    sets = cmake_sets(text)
    for key in REQUIRED_METADATA:
        assert sets.get(f"EXTENSION_{key}", "").strip(), f"EXTENSION_{key} missing or empty"
    for key in ("HOMEPAGE", "ICONURL"):
        assert sets[f"EXTENSION_{key}"].startswith("https://")
    assert all(u.startswith("https://") for u in sets["EXTENSION_SCREENSHOTURLS"].split())
    assert "find_package(Slicer REQUIRED)" in text and "add_subdirectory(CaseAnonymizer)" in text
    assert "Slicer_EXTENSION_GENERATE_CONFIG" in text and "Slicer_EXTENSION_CPACK" in text


def test_module_cmake_lists_every_file_it_ships() -> None:
    text = (MODULE_DIR / "CMakeLists.txt").read_text()
    expanded = text.replace("${MODULE_NAME}", "CaseAnonymizer")
    blocks = re.findall(r"set\(MODULE_PYTHON_(?:SCRIPTS|RESOURCES)\s+(.*?)\)", expanded, re.S)
    listed = {token for block in blocks for token in block.split()}
    shipped = {"CaseAnonymizer.py"}
    shipped |= {str(p.relative_to(MODULE_DIR)) for p in (MODULE_DIR / "CaseAnonymizerLib").glob("*.py")}
    shipped |= {str(p.relative_to(MODULE_DIR)) for p in (MODULE_DIR / "Resources").rglob("*") if p.is_file()}
    assert shipped <= listed, sorted(shipped - listed)
    assert all((MODULE_DIR / p).is_file() for p in listed), sorted(p for p in listed if not (MODULE_DIR / p).is_file())
    assert "slicerMacroBuildScriptedModule" in text and "slicer_add_python_unittest" in text


def test_license_readme_and_index_description() -> None:
    license_text = (EXTENSION / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0" in license_text
    readme = (EXTENSION / "README.md").read_text()
    for topic in ("Install", "Connect", "consent", "Export", "Screenshot"):
        assert topic.lower() in readme.lower(), topic
    # the index URLs name an invented repository until the extension is published: the README says so
    homepage = re.search(r'EXTENSION_HOMEPAGE "([^"#]+)', (EXTENSION / "CMakeLists.txt").read_text()).group(1)
    publishing = readme.split("## Publishing")[1].split("\n## ")[0]
    assert homepage in publishing and "placeholders" in publishing and "before publishing" in publishing
    index = json.loads((EXTENSION / "CaseAnonymizer.json").read_text())
    assert index["$schema"].startswith("https://raw.githubusercontent.com/Slicer/Slicer/")
    for key in ("scm_url", "scm_revision", "build_subdirectory", "category", "build_dependencies"):
        assert key in index, key
    s4ext = (EXTENSION / "CaseAnonymizer.s4ext").read_text()
    for key in ("scm git", "scmurl", "scmrevision", "depends", "build_subdirectory", "homepage", "category",
                "iconurl", "screenshoturls", "description", "contributors", "enabled"):
        assert re.search(rf"^{key}\b", s4ext, re.M), key


def test_icon_is_a_128_pixel_png() -> None:
    for path in (MODULE_DIR / "Resources" / "Icons" / "CaseAnonymizer.png", EXTENSION / "CaseAnonymizer.png"):
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", data[16:24])
        assert (width, height) == (128, 128)


def test_extension_never_imports_the_server_side() -> None:
    forbidden = {"monai_anon_app", "torch", "monai", "monailabel", "nibabel", "PySide6"}
    for path in EXTENSION.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in forbidden, f"{path.name} imports {name}"


def test_lib_has_no_qt_and_mrml_only_in_the_logic() -> None:
    """No Qt anywhere in CaseAnonymizerLib; ``slicer`` and ``vtk`` only in the modules the Logic runs on, so that
    the package root and the other modules run in plain Python."""
    for path in (MODULE_DIR / "CaseAnonymizerLib").glob("*.py"):
        plain = path.stem not in SLICER_LIB_MODULES
        forbidden = {"qt", "ctk"} | ({"slicer", "vtk", "vtkmodules"} if plain else set())
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                assert not (plain and node.module in SLICER_LIB_MODULES), f"{path.name}: .{node.module}"
                continue
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mods = [node.module or ""]
            else:
                continue
            for mod in mods:
                assert mod.split(".")[0] not in forbidden, f"{path.name}: {mod}"


def test_the_extensions_own_library_checks_pass() -> None:
    """Testing/Python/CaseAnonymizerLibTest.py (what ctest runs inside Slicer) passes here too."""
    import importlib.util
    import unittest

    path = MODULE_DIR / "Testing" / "Python" / "CaseAnonymizerLibTest.py"
    spec = importlib.util.spec_from_file_location("CaseAnonymizerLibTest", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = unittest.TextTestRunner(verbosity=0).run(unittest.defaultTestLoader.loadTestsFromModule(module))
    assert result.wasSuccessful() and result.testsRun == 4, result.failures + result.errors
