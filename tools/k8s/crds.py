"""CustomResourceDefinitions: found in YAML files (text only: Argo's are megabytes), server-side applied,
waited for until Established; unchanged ones are skipped."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from tools.k8s.base import ControlPlaneError

if TYPE_CHECKING:
    from tools.k8s.controlplane import ControlPlane

_DOC_SPLIT = re.compile(r"^---[ \t]*$", re.MULTILINE)
_CRD_KIND = re.compile(r"^kind:[ \t]*CustomResourceDefinition[ \t]*$", re.MULTILINE)
_NAME = re.compile(r"^metadata:[ \t]*\n(?:[ \t]+.*\n)*?[ \t]+name:[ \t]*['\"]?([^'\"\s]+)", re.MULTILINE)


def yaml_files(paths: Iterable[Path]) -> list[Path]:
    """*.yaml and *.yml files: the paths that are files, and those under the paths that are
    directories (recursively). Paths that do not exist are skipped."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            out.append(p)
        elif p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.suffix in (".yaml", ".yml") and f.is_file())
    return out


def crd_documents(files: Iterable[Path]) -> dict[str, str]:
    """The CustomResourceDefinition documents of YAML files by CRD name (other documents,
    like kopf's example objects, are left out). Text only: Argo's CRDs are megabytes."""
    docs: dict[str, str] = {}
    for f in files:
        for doc in _DOC_SPLIT.split(Path(f).read_text()):
            if _CRD_KIND.search(doc):
                m = _NAME.search(doc)
                if not m:
                    raise ControlPlaneError(f"{f}: a CustomResourceDefinition without metadata.name")
                docs[m.group(1)] = doc.strip("\n") + "\n"
    return docs


def install_crds(cp: ControlPlane, files: Iterable[Path], timeout: float = 180.0) -> list[str]:
    """Server-side apply the CRDs in YAML files (too big for client-side apply's
    annotation) and wait until they are Established. Returns their names."""
    docs = crd_documents(files)
    if not docs:
        return []
    kubectl, env = str(cp.bin_dir / "kubectl"), cp.env()
    ctx = cp.admin_context()

    def current(name: str, metadata_only: bool = False) -> dict:
        accept = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1" if metadata_only else None
        status, body = cp.http_get(f"{cp.server}/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}",
                                 ctx, accept)
        return json.loads(body) if status == 200 else {}

    # Applying an unchanged multi-megabyte CRD still costs the API server seconds: skip the
    # CRDs this directory's record says were applied from the same text and not changed since.
    record_file = cp.dir / "crds-applied.json"
    record = json.loads(record_file.read_text()) if record_file.exists() else {}
    digest = {n: hashlib.sha256(d.encode()).hexdigest() for n, d in docs.items()}

    def unchanged(name: str) -> bool:
        md = current(name, metadata_only=True).get("metadata", {})
        return record.get(name) == [digest[name], md.get("uid"), md.get("generation")]
    todo = [n for n in docs if not unchanged(n)]

    def apply(name: str) -> None:
        proc = subprocess.run([kubectl, "apply", "--server-side", "--force-conflicts",
                               "--field-manager=filedrop", "-f", "-"],
                              input=docs[name], capture_output=True, text=True, env=env, timeout=timeout)
        if proc.returncode != 0:
            raise ControlPlaneError(f"kubectl apply of CRD {name} failed:\n{proc.stderr}")
    # The API server, not kubectl, is the bottleneck: a few at once take half the time.
    with ThreadPoolExecutor(max_workers=3) as pool:
        list(pool.map(apply, sorted(todo, key=lambda n: -len(docs[n]))))

    def established(name: str) -> bool:
        # (kubectl wait gives up on a CRD whose status has no conditions yet.)
        crd = current(name)
        if not any(c["type"] == "Established" and c["status"] == "True"
                   for c in crd.get("status", {}).get("conditions") or []):
            return False
        record[name] = [digest[name], crd["metadata"]["uid"], crd["metadata"]["generation"]]
        return True
    deadline = time.monotonic() + timeout
    pending = sorted(todo)
    while pending:
        pending = [n for n in pending if not established(n)]
        if pending and time.monotonic() > deadline:
            raise ControlPlaneError(f"CRDs not Established after {timeout:.0f}s: {', '.join(pending)}")
        if pending:
            time.sleep(0.1)  # poll interval
    record_file.write_text(json.dumps(record, indent=1) + "\n")
    return sorted(docs)
