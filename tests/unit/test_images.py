"""Static checks of the filedrop image's Dockerfile (``make images`` builds it with buildah, tools/images), and of
the cache keys that decide when ``make images`` rebuilds."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_main_image_agrees_with_the_package_and_the_chart() -> None:
    dockerfile = (REPO / "operator" / "Dockerfile").read_text()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    # the base is a build argument (tools/images builds from a local stand-in); its default is the public image
    [python] = re.findall(r"^ARG PYTHON_IMAGE=python:(\d+\.\d+)-slim$", dockerfile, re.MULTILINE)
    assert set(re.findall(r"^FROM (\S+)", dockerfile, re.MULTILINE)) == {"${PYTHON_IMAGE}"}
    low = re.search(r">=(\d+\.\d+)", project["requires-python"]).group(1)  # type: ignore[union-attr]
    assert tuple(map(int, python.split("."))) >= tuple(map(int, low.split(".")))
    extras = re.search(r"filedrop_pipeline-\*\.whl\)\[([a-z,]+)\]", dockerfile).group(1).split(",")  # type: ignore[union-attr]
    assert set(extras) <= set(project["optional-dependencies"])
    # the libraries come from the constraints file; the dbt project comes inside the wheel
    assert "pip install --no-cache-dir -c /tmp/constraints.txt" in dockerfile
    assert "FILEDROP_DBT_PROJECT_DIR" not in dockerfile
    [user] = re.findall(r"^USER (\d+)$", dockerfile, re.MULTILINE)
    assert int(user) != 0
    values = (REPO / "helm" / "filedrop" / "values.yaml").read_text()
    assert "repository: ghcr.io/filedrop/filedrop" in values
    # the load Jobs run `filedrop load ...` as their command: the entry point must be the CLI
    assert 'ENTRYPOINT ["filedrop"]' in dockerfile


def test_image_keys_change_with_what_the_image_copies(tmp_path: Path) -> None:
    from tools.images.recipes import FILEDROP_IMAGE, image_key

    for name in ("operator/Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "constraints.txt",
                 "filedrop/cli.py", "filedrop/dbt_project/dbt_project.yml"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    bases = {"python": "k1"}
    key = image_key(FILEDROP_IMAGE, tmp_path, "dev", bases)
    # what .dockerignore keeps out of the build is not part of the key
    (tmp_path / "filedrop" / "dbt_project" / "target").mkdir()
    (tmp_path / "filedrop" / "dbt_project" / "target" / "manifest.json").write_text("{}")
    (tmp_path / "filedrop" / "__pycache__").mkdir()
    (tmp_path / "filedrop" / "__pycache__" / "cli.cpython-311.pyc").write_bytes(b"\0")
    assert image_key(FILEDROP_IMAGE, tmp_path, "dev", bases) == key
    assert image_key(FILEDROP_IMAGE, tmp_path, "v2", bases) != key
    assert image_key(FILEDROP_IMAGE, tmp_path, "dev", {"python": "k2"}) != key
    (tmp_path / "filedrop" / "cli.py").write_text("changed")
    assert image_key(FILEDROP_IMAGE, tmp_path, "dev", bases) != key


def test_dockerignore_keeps_out_what_the_keys_ignore() -> None:
    from tools.images.recipes import IGNORED_NAMES

    ignored = (REPO / ".dockerignore").read_text()
    for name in IGNORED_NAMES - {"logs", "target", "dbt_packages", ".user.yml"}:
        assert name in ignored
    for name in ("filedrop/dbt_project/target", "filedrop/dbt_project/logs", "filedrop/dbt_project/dbt_packages",
                 ".venv"):
        assert name in ignored


def test_local_bases_stand_in_for_the_dockerfiles_defaults() -> None:
    from tools.images.recipes import IMAGES, build_args

    for image in IMAGES.values():
        text = (REPO / image.dockerfile).read_text()
        defaults = dict(re.findall(r"^ARG (\w+_IMAGE)=(\S+)$", text, re.MULTILINE))
        assert set(build_args(image)) == set(defaults), image.dockerfile
        for arg in defaults:
            assert f"FROM ${{{arg}}}" in text


def test_build_ca_adds_only_missing_certificates() -> None:
    from tools.images.rootfs import missing_certificates

    a, b, c = (f"-----BEGIN CERTIFICATE-----\n{x}\n-----END CERTIFICATE-----" for x in "ABC")
    assert missing_certificates(f"{a}\n{b}\n{c}\n", f"{b}\n") == [a, c]
