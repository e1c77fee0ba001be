"""An install outside the source tree: the wheel that ``pip install .`` builds carries the shipped default
model and the sample study, and its ``monai-anon`` works from any folder.

The wheel is built from a clean copy of what an sdist holds (``pyproject.toml``, ``README.md``, the package,
``models/phantom-cxr``), so no stale ``build/`` folder can add or hide a file. It goes into a fresh venv
(``--without-pip``; ``pip --python`` installs it with ``--no-deps``); the dependencies come from this
interpreter's site-packages through a ``.pth`` line added after the install. That folder also holds this
project's editable install, whose finder a plain ``.pth`` path line never runs: every test asserts that the
code, the model and the sample study it uses lie in the fresh venv.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from server_testlib import free_port, launch_server

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    from setuptools._vendor import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "monai_anon_app"
MODEL_FILES = ("config.yaml", "model.pt", "identity_vae.pt", "bank.pt", "calibration.json", "finding_judge.pt",
               "metrics.json", "README.md", "examples.png")
SAMPLE_DICOM = sorted(p.name for p in (PACKAGE / "data" / "sample_study" / "images").glob("*.dcm"))


def setuptools_config() -> dict:
    with open(REPO / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)["tool"]["setuptools"]


def run(cmd: list, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_every_package_folder_is_listed_in_pyproject():
    """``packages`` is a list (so that ``models/`` can map into the package): a new folder must join it."""
    folders = {".".join(d.relative_to(REPO).parts) for d in [PACKAGE, *PACKAGE.rglob("*")]
               if d.is_dir() and "__pycache__" not in d.parts and any(f.is_file() for f in d.iterdir())}
    config = setuptools_config()
    missing = sorted(folders - set(config["packages"]))
    assert not missing, f"add {missing} to [tool.setuptools] packages in pyproject.toml"
    assert config["package-dir"] == {"monai_anon_app.models": "models"}
    assert len(SAMPLE_DICOM) >= 4


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    """A clean copy of what an sdist holds."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "MANIFEST.in"):
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, src / name)
    shutil.copytree(PACKAGE, src / PACKAGE.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copytree(REPO / "models" / "phantom-cxr", src / "models" / "phantom-cxr")
    return src


@pytest.fixture(scope="module")
def wheel(src, tmp_path_factory) -> Path:
    """The wheel, built offline with this interpreter's setuptools from ``src``."""
    out = tmp_path_factory.mktemp("wheel")
    r = run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "--no-index", "-q",
             "-w", out], cwd=src)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (found,) = out.glob("monai_anon-*.whl")
    return found


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv holding only the wheel; the dependencies are read from this interpreter's site-packages."""
    root = tmp_path_factory.mktemp("venv")
    r = run([sys.executable, "-m", "venv", "--without-pip", root], cwd=root)
    assert r.returncode == 0, r.stderr
    python = root / "bin" / "python"
    r = run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel],
            cwd=root)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    site = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=root)
                .stdout.strip())
    assert (site / "monai_anon_app" / "__init__.py").is_file()
    deps = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (site / "zz_monai_anon_test_deps.pth").write_text("".join(f"{p}\n" for p in deps))
    return root


@pytest.fixture(scope="module")
def site(venv) -> Path:
    (found,) = (venv / "lib").glob("python*/site-packages")
    return found.resolve()


@pytest.fixture
def env() -> dict[str, str]:
    """The environment of the installed commands: nothing pointing at the source tree or its models."""
    drop = {"MONAI_ANON_MODELS", "MONAI_ANON_HOME", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def inside(path: str | Path, folder: Path) -> bool:
    return Path(path).resolve().is_relative_to(folder.resolve())


def test_the_wheel_carries_the_code_the_model_and_the_sample_study(src, wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    code = {p.relative_to(src).as_posix() for p in (src / PACKAGE.name).rglob("*.py")}
    assert not code - names, f"source files missing from the wheel: {sorted(code - names)}"
    model = {f"monai_anon_app/models/phantom-cxr/{f}" for f in MODEL_FILES}
    sample = {"monai_anon_app/data/sample_study/labels.csv",
              *(f"monai_anon_app/data/sample_study/images/{f}" for f in SAMPLE_DICOM)}
    assert not (model | sample) - names, sorted((model | sample) - names)
    assert not [n for n in names if n.startswith(("models/", "tests/"))]


def test_the_installed_package_uses_its_own_code_model_and_sample(venv, site, env, tmp_path):
    probe = ("import json, monai_anon_app\n"
             "from monai_anon_app.data.sample import sample_study\n"
             "from monai_anon_app.modelfolder.registry import resolve_model\n"
             "print(json.dumps({'package': monai_anon_app.__file__, 'model': str(resolve_model(None)),"
             " 'sample': str(sample_study())}))\n")
    r = run([venv / "bin" / "python", "-c", probe], cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    where = json.loads(r.stdout.strip().splitlines()[-1])
    assert all(inside(p, site) for p in where.values()), where
    assert Path(where["model"]) == site / "monai_anon_app" / "models" / "phantom-cxr"
    assert all((Path(where["model"]) / f).is_file() for f in MODEL_FILES)


def test_anonymize_sample_from_any_folder(venv, env, tmp_path):
    r = run([venv / "bin" / "monai-anon", "anonymize", "--sample", "OUT", "--no-progress"], cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    written = sorted((tmp_path / "OUT").rglob("*.dcm"))
    assert len(written) == len(SAMPLE_DICOM), [p.name for p in written]
    assert all(p.read_bytes()[128:132] == b"DICM" for p in written)


def conf_pairs(cmd: list[str]) -> dict[str, str]:
    return {cmd[i + 1]: cmd[i + 2] for i, arg in enumerate(cmd) if arg == "--conf"}


def test_serve_dry_run_serves_the_installed_model(venv, site, env, tmp_path):
    work = tmp_path / "work"
    r = run([venv / "bin" / "monai-anon", "serve", "--dry-run", "--workdir", work], cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    command = r.stdout.strip().splitlines()[-1].split()
    start = command.index("monailabel.main")
    assert command[start - 2] == str(venv / "bin" / "python") and command[start + 1] == "start_server"
    app = Path(command[command.index("--app") + 1])
    studies = Path(command[command.index("--studies") + 1])
    assert inside(app, work) and inside(studies, work)
    assert sorted(p.name for p in (studies / "images").glob("*.dcm")) == SAMPLE_DICOM
    # the model folder the server will load, from the very --conf pairs the command passes
    probe = ("import json, sys\nfrom monai_anon_app.server.settings import Runtime\n"
             "print(Runtime.from_conf(sys.argv[1], json.loads(sys.argv[2])).model_base)\n")
    r = run([venv / "bin" / "python", "-c", probe, app, json.dumps(conf_pairs(command))], cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    model = Path(r.stdout.strip().splitlines()[-1])
    assert model == site / "monai_anon_app" / "models" / "phantom-cxr" and not inside(model, REPO)


def test_serve_from_the_wheel_answers_info(venv, env, tmp_path):
    port = free_port()
    cmd = [venv / "bin" / "monai-anon", "serve", "--workdir", tmp_path / "work", "--port", port, "--workers", "0",
           "--log-level", "warning"]
    server = launch_server(cmd, tmp_path / "work", port, cwd=tmp_path, env=env)
    try:
        model = server.get("/info/").json()["models"]["anonymize"]["model"]
        assert model["available"] is True and model["name"] == "phantom-cxr", model
    finally:
        server.stop()
