"""Host-side steps of a base image's mmdebstrap run (its customize hooks call these with the root directory).

    python -m tools.images.rootfs build-ca ROOT HOST_BUNDLE    the host's CAs that ROOT's bundle lacks, as
                                                               ROOT/usr/local/share/ca-certificates/filedrop-build/*.crt
                                                               (the hook then runs update-ca-certificates)
    python -m tools.images.rootfs spark-home ROOT WHEEL DEST   Spark's distribution from a pyspark wheel at ROOT/DEST
"""

from __future__ import annotations

import argparse
import re
import stat
import zipfile
from pathlib import Path

PEM = re.compile(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", re.S)
BUILD_CA_DIR = "usr/local/share/ca-certificates/filedrop-build"
#: the parts of pyspark's wheel that form a Spark distribution (the same names as in Spark's release tarball)
SPARK_DIRS = ("bin", "sbin", "jars", "python", "data", "examples", "licenses")


def missing_certificates(host_bundle: str, root_bundle: str) -> list[str]:
    """PEM certificates of `host_bundle` that `root_bundle` does not hold (compared ignoring whitespace)."""

    def key(pem: str) -> str:
        return "".join(pem.split())

    have = {key(c) for c in PEM.findall(root_bundle)}
    return [c for c in PEM.findall(host_bundle) if key(c) not in have]


def build_ca(root: Path, host_bundle: Path) -> int:
    extra = missing_certificates(host_bundle.read_text(), (root / "etc/ssl/certs/ca-certificates.crt").read_text())
    target = root / BUILD_CA_DIR
    target.mkdir(parents=True, exist_ok=True)
    for i, pem in enumerate(extra):
        (target / f"build-ca-{i}.crt").write_text(pem + "\n")
    return len(extra)


def spark_home(root: Path, wheel: Path, dest: str) -> int:
    """Unpack `pyspark/<dir>/...` for SPARK_DIRS into root/dest; the scripts executable, Windows ones left out."""
    home = root / dest.lstrip("/")
    count = 0
    with zipfile.ZipFile(wheel) as whl:
        for info in whl.infolist():
            parts = info.filename.split("/")
            if len(parts) < 3 or parts[0] != "pyspark" or parts[1] not in SPARK_DIRS or info.is_dir():
                continue
            if parts[1] in ("bin", "sbin") and parts[-1].endswith(".cmd"):
                continue
            target = home.joinpath(*parts[1:])
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(whl.read(info))
            executable = parts[1] in ("bin", "sbin") or bool((info.external_attr >> 16) & stat.S_IXUSR)
            target.chmod(0o755 if executable else 0o644)
            count += 1
        version = whl.filename and Path(whl.filename).name.split("-")[1]
    (home / "RELEASE").write_text(f"Spark {version} (unpacked from {wheel.name})\n")
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.images.rootfs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    ca = sub.add_parser("build-ca")
    ca.add_argument("root", type=Path)
    ca.add_argument("host_bundle", type=Path)
    sh = sub.add_parser("spark-home")
    sh.add_argument("root", type=Path)
    sh.add_argument("wheel", type=Path)
    sh.add_argument("dest")
    args = parser.parse_args(argv)
    if args.command == "build-ca":
        print(f"rootfs: {build_ca(args.root, args.host_bundle)} build-time CA certificates added")
    else:
        print(f"rootfs: {spark_home(args.root, args.wheel, args.dest)} files of Spark's distribution in {args.dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
