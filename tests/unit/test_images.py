"""The filedrop image cannot be built here (no Docker engine): check what can be checked statically."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_main_image_agrees_with_the_package_and_the_chart() -> None:
    dockerfile = (REPO / "operator" / "Dockerfile").read_text()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    [python] = set(re.findall(r"FROM python:(\d+\.\d+)-slim", dockerfile))
    low = re.search(r">=(\d+\.\d+)", project["requires-python"]).group(1)  # type: ignore[union-attr]
    assert tuple(map(int, python.split("."))) >= tuple(map(int, low.split(".")))
    extras = re.search(r"filedrop-\*\.whl\)\[([a-z,]+)\]", dockerfile).group(1).split(",")  # type: ignore[union-attr]
    assert set(extras) <= set(project["optional-dependencies"])
    assert "COPY dbt /opt/filedrop/dbt" in dockerfile and "FILEDROP_DBT_PROJECT_DIR=/opt/filedrop/dbt" in dockerfile
    [user] = re.findall(r"^USER (\d+)$", dockerfile, re.MULTILINE)
    assert int(user) != 0
    values = (REPO / "helm" / "filedrop" / "values.yaml").read_text()
    assert "repository: ghcr.io/filedrop/filedrop" in values
    # the load Jobs run `filedrop load ...` as their command: the entry point must be the CLI
    assert 'ENTRYPOINT ["filedrop"]' in dockerfile
