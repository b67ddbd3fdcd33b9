"""Pack a static binary as a one-layer OCI image archive (an image-layout tar) that
`ctr images import` takes; used by build.sh for the node's pause and probe images.

    python -m tools.k8s.oci --binary PATH --ref docker.io/library/NAME:TAG --out FILE.tar [-- ARG...]

The layer holds the binary as /NAME (root-owned, mode 0755, mtime 0: the same binary gives
the same digests); the image's entrypoint is /NAME followed by the ARGs.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"


def _tar_member(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 0
    tar.addfile(info, io.BytesIO(data))


def _blob(blobs: dict[str, bytes], data: bytes, media_type: str) -> dict:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


def pack(binary: Path, ref: str, out: Path, args: list[str] | None = None) -> str:
    """Write the archive; returns the manifest's digest."""
    name = binary.name
    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w", format=tarfile.PAX_FORMAT) as layer:
        _tar_member(layer, name, binary.read_bytes(), 0o755)
    layer_bytes = layer_buf.getvalue()
    blobs: dict[str, bytes] = {}
    layer_desc = _blob(blobs, layer_bytes, MEDIA_LAYER)
    config = {
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": [f"/{name}", *(args or [])], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [layer_desc["digest"]]},  # uncompressed: diff_id = digest
    }
    config_desc = _blob(blobs, json.dumps(config, sort_keys=True).encode(), MEDIA_CONFIG)
    manifest = {"schemaVersion": 2, "mediaType": MEDIA_MANIFEST, "config": config_desc, "layers": [layer_desc]}
    manifest_desc = _blob(blobs, json.dumps(manifest, sort_keys=True).encode(), MEDIA_MANIFEST)
    manifest_desc["annotations"] = {
        "io.containerd.image.name": ref,  # the name `ctr images import` gives it
        "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[-1],
    }
    index = {"schemaVersion": 2, "manifests": [manifest_desc]}
    tmp = out.with_name(out.name + ".partial")
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _tar_member(tar, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        _tar_member(tar, "index.json", json.dumps(index, sort_keys=True).encode())
        for digest, data in sorted(blobs.items()):
            _tar_member(tar, f"blobs/sha256/{digest.split(':', 1)[1]}", data)
    tmp.replace(out)
    return manifest_desc["digest"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", type=Path, required=True)
    ap.add_argument("--ref", required=True, help="the image's full name, e.g. docker.io/library/x:1")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("args", nargs="*", help="arguments after the entrypoint")
    a = ap.parse_args(argv)
    print(pack(a.binary, a.ref, a.out, a.args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
