"""The built distribution installs one package, `trainledger`, that works on its own.

The repository's top-level folders are its subpackages (linked from
`trainledger/`); a wheel built from a clone must carry them all, under that
one name, and answer from anywhere once installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support import REPO

SUBPACKAGES = ("domain", "service", "projections", "adapters", "cli")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a clone of the repository's committed files, as a new user gets it."""
    root = tmp_path_factory.mktemp("wheel")
    clone = root / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)
    # The working tree as it is now (tests run before a commit, too).
    for package in ("trainledger", *SUBPACKAGES):
        source = REPO / package
        if source.is_symlink():
            continue
        shutil.rmtree(clone / package, ignore_errors=True)
        shutil.copytree(source, clone / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", clone / "pyproject.toml")
    out = root / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(clone)],
        check=True,
        timeout=600,
        capture_output=True,
    )
    (built,) = out.glob("trainledger-*.whl")
    return built


def test_the_wheel_holds_one_top_level_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"trainledger"}
    for package in SUBPACKAGES:
        assert f"trainledger/{package}/__init__.py" in names
    assert "trainledger/py.typed" in names
    # the service's pages need their templates and assets
    assert "trainledger/adapters/http/templates/checkpoint.html" in names
    assert "trainledger/adapters/http/static/style.css" in names
    # The bundled trainer runs as a script by path, with its ORPO backend beside it.
    for trainer in ("reference_trainer", "orpo_trainer"):
        assert f"trainledger/adapters/{trainer}.py" in names
    assert not [name for name in names if name.endswith((".c", ".so"))]


def test_the_installed_package_answers_from_anywhere(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), wheel],
        check=True,
        timeout=300,
        capture_output=True,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target), "TRAINLEDGER_ACTOR": "tester"}
    probe = (
        "import importlib.util, json, trainledger.cli.main, trainledger.domain.model\n"
        "print(json.dumps({'file': trainledger.__file__,"
        " 'domain': importlib.util.find_spec('domain') is not None}))"
    )
    found = subprocess.run(
        [sys.executable, "-c", probe],
        check=False,
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
    )
    assert found.returncode == 0, found.stderr
    assert str(target) in found.stdout
    assert '"domain": false' in found.stdout  # no generic top-level package installed
    store = f"sqlite:///{elsewhere / 'ledger.db'}"
    created = subprocess.run(
        [sys.executable, "-m", "trainledger.cli", "--store", store, "--json", "experiment",
         "create", "--profile", "local-reader", "--family", "qwen2.5-7b-reader", "--backend",
         "dry-run", "--dataset-fingerprint", "0123456789abcdef", "--sample-count", "3",
         "--benchmark-export-id", "b", "--output-dir", str(elsewhere / "out")],
        check=False, cwd=elsewhere, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    verified = subprocess.run(
        [sys.executable, "-m", "trainledger.cli", "--store", store, "verify"],
        check=False, cwd=elsewhere, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stderr
    assert "integrity  ok" in verified.stdout
