"""What is built: the local base images and the repository's two images, as plain data, and their cache keys.

Nothing here runs a process. ``build.py`` turns a ``Base`` into an mmdebstrap + buildah run and an ``Image``
into a ``buildah bud`` of the repository's own Dockerfile with ``--build-arg`` naming the local bases.

The local bases stand in for the public images the Dockerfiles name (no image registry is reachable where
this repository is developed); they are made from Debian bookworm's packages with the properties those
Dockerfiles rely on, nothing more. Users building on EKS never see them: the Dockerfiles' defaults stay
the public images.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

SUITE = "bookworm"
#: apt sources of every base (also what `apt-get` inside a build uses); plain http: apt checks signatures
MIRRORS = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
#: like the slim images: no manual pages or documentation beyond the copyright files
DPKG_OPTIONS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
)
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"

# Build-time only: this machine reaches PyPI and Maven Central through a TLS-intercepting proxy whose CA is in
# the host's bundle. The `build-ca` hook adds the host's CAs that Debian's bundle lacks to the *local* bases'
# system trust store (and so to Java's cacerts through ca-certificates-java); PIP_CERT makes pip use that
# store. Images users build from the public bases never contain it.
BUILD_CA_HOOK = '{python} -m tools.images.rootfs build-ca "$1" {host_ca_bundle} && chroot "$1" update-ca-certificates'
PIP_CERT_ENV = ("PIP_CERT", SYSTEM_CA_BUNDLE)
# Also build-time only: `make images` mounts its wheel cache here (pyspark, a 450 MB sdist on PyPI, built once
# by the host's pip); pip prefers a local wheel to an sdist. The directory exists in the local bases, so the
# mount leaves nothing behind in the layers, and it is empty whenever nothing is mounted.
WHEELS_DIR = "/var/cache/filedrop-wheels"
WHEELS_HOOK = f'mkdir -p "$1{WHEELS_DIR}"'
PIP_FIND_LINKS_ENV = ("PIP_FIND_LINKS", WHEELS_DIR)

SPARK_VERSION = "4.3.0"
SPARK_UID = 185


@dataclass(frozen=True)
class Base:
    """A local base image: Debian packages (mmdebstrap), customize hooks, then the image configuration."""

    name: str
    ref: str
    #: the public image it stands in for, and the Dockerfile build argument that names it
    stands_in_for: str
    build_arg: str
    packages: tuple[str, ...]
    #: mmdebstrap --customize-hook commands, run on the host with "$1" the root directory; build.py fills in
    #: {python} (with the repository on PYTHONPATH), {repo}, {host_ca_bundle} and {wheel}
    hooks: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    user: str = ""
    workdir: str = ""
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    #: repository files the hooks read (part of the cache key)
    files: tuple[str, ...] = ("tools/images/rootfs.py",)
    #: a PyPI distribution the hooks unpack ({wheel}), fetched on the host with pip
    wheel: str = ""


PYTHON_BASE = Base(
    name="python",
    ref="localhost/filedrop-base/python:3.11-bookworm",
    stands_in_for="python:3.11-slim",
    build_arg="PYTHON_IMAGE",
    packages=("python3", "python3-venv", "passwd", "ca-certificates"),
    hooks=(
        BUILD_CA_HOOK,
        WHEELS_HOOK,
        # Debian's python3 is externally managed (PEP 668); the official image's python and pip live in
        # /usr/local, so here a virtualenv at /usr/local puts python, pip and installed scripts there.
        'chroot "$1" python3 -m venv /usr/local',
    ),
    env=(("PATH", PATH), ("LANG", "C.UTF-8"), PIP_CERT_ENV, PIP_FIND_LINKS_ENV),
    cmd=("python3",),
)

MAVEN_BASE = Base(
    name="maven",
    ref="localhost/filedrop-base/maven:3-jdk17-bookworm",
    stands_in_for="maven:3.9-eclipse-temurin-17",
    build_arg="MAVEN_IMAGE",
    # Debian's Maven is 3.8; `mvn dependency:copy` is all the Spark Dockerfile asks of it
    packages=("openjdk-17-jdk-headless", "maven", "ca-certificates"),
    hooks=(BUILD_CA_HOOK,),
    env=(
        ("PATH", PATH),
        ("LANG", "C.UTF-8"),
        ("JAVA_HOME", "/usr/lib/jvm/java-17-openjdk-amd64"),
        ("MAVEN_HOME", "/usr/share/maven"),
    ),
    cmd=("mvn",),
)

SPARK_BASE = Base(
    name="spark",
    ref=f"localhost/filedrop-base/spark:{SPARK_VERSION}-java17-python3-bookworm",
    stands_in_for=f"apache/spark:{SPARK_VERSION}-scala2.13-java17-python3-ubuntu",
    build_arg="SPARK_IMAGE",
    # tini and gosu run Spark's processes from /opt/entrypoint.sh; libnss-wrapper gives a random uid a name;
    # procps because Spark's scripts call ps
    packages=(
        "openjdk-17-jre-headless", "python3", "passwd", "ca-certificates", "procps", "tini", "gosu",
        "libnss-wrapper",
    ),
    hooks=(
        BUILD_CA_HOOK,
        WHEELS_HOOK,
        # Spark's distribution (bin/, sbin/, jars/, python/lib ...) from the pyspark release of PyPI
        '{python} -m tools.images.rootfs spark-home "$1" {wheel} /opt/spark',
        f'chroot "$1" groupadd --system --gid {SPARK_UID} spark',
        f'chroot "$1" useradd --system --uid {SPARK_UID} --gid spark --home-dir /opt/spark --no-create-home spark',
        f'mkdir -p "$1/opt/spark/work-dir" && chown {SPARK_UID}:{SPARK_UID} "$1/opt/spark/work-dir"'
        ' && chmod g+w "$1/opt/spark/work-dir"',
        'install -m 0755 {repo}/tools/images/bases/spark-entrypoint.sh "$1/opt/entrypoint.sh"',
    ),
    env=(
        ("PATH", PATH),
        ("LANG", "C.UTF-8"),
        ("JAVA_HOME", "/usr/lib/jvm/java-17-openjdk-amd64"),
        ("SPARK_HOME", "/opt/spark"),
        PIP_CERT_ENV,
        PIP_FIND_LINKS_ENV,
    ),
    user=str(SPARK_UID),
    workdir="/opt/spark/work-dir",
    entrypoint=("/opt/entrypoint.sh",),
    files=("tools/images/rootfs.py", "tools/images/bases/spark-entrypoint.sh"),
    wheel=f"pyspark=={SPARK_VERSION}",
)

#: what a static Go binary needs around it, as Google's distroless "static" image has it: CA certificates,
#: MIME types, time zones, /etc/services (Debian minbase, so more than distroless: a shell among it)
STATIC_BASE = Base(
    name="static",
    ref="localhost/filedrop-base/static:bookworm",
    stands_in_for="gcr.io/distroless/static-debian12",
    build_arg="STATIC_IMAGE",
    packages=("ca-certificates", "media-types", "tzdata", "netbase"),
    hooks=(),
    env=(("PATH", PATH),),
)

BASES = {b.name: b for b in (PYTHON_BASE, MAVEN_BASE, SPARK_BASE, STATIC_BASE)}


@dataclass(frozen=True)
class Image:
    """One of the repository's images: its Dockerfile, the bases it is built from, the inputs it copies."""

    name: str
    repository: str
    dockerfile: str
    bases: tuple[str, ...]
    #: files and directories the Dockerfile copies from the repository (what the cache key hashes)
    inputs: tuple[str, ...]
    #: Maven's local repository is mounted here during the build (downloads kept between builds)
    maven_repository: str = ""
    #: a command (run from the repository root) that makes the build context and prints its directory as
    #: its last line; empty: the repository is the context
    context_command: tuple[str, ...] = ()
    #: a tag of its own (a third-party release) instead of the build's
    fixed_tag: str = ""

    def tag(self, tag: str) -> str:
        return self.fixed_tag or tag

    def ref(self, tag: str) -> str:
        """The name kubelet resolves `image: <repository>:<tag>` to (docker.io/library/ is implied)."""
        return f"docker.io/library/{self.repository}:{self.tag(tag)}"


FILEDROP_IMAGE = Image(
    name="filedrop",
    repository="filedrop",
    dockerfile="operator/Dockerfile",
    bases=("python",),
    inputs=("operator/Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "constraints.txt", "filedrop"),
)

SPARK_IMAGE = Image(
    name="spark",
    repository="filedrop-spark",
    dockerfile="spark_images/Dockerfile",
    bases=("maven", "python", "spark"),
    inputs=("spark_images/Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "constraints.txt", "filedrop"),
    maven_repository="/root/.m2/repository",
)

SPARK_OPERATOR_VERSION = "2.5.2"

#: The Kubeflow spark-operator's controller (tools/k8s/spark-operator): its binary from Go modules, built by
#: tools/k8s/build.sh into the user's cache, which is this image's build context.
SPARK_OPERATOR_IMAGE = Image(
    name="spark-operator",
    repository="filedrop-spark-operator",
    dockerfile="tools/k8s/spark-operator/Dockerfile",
    bases=("spark",),
    inputs=("tools/k8s/spark-operator/Dockerfile", "tools/k8s/spark-operator/go.mod",
            "tools/k8s/spark-operator/go.sum", "tools/k8s/build.sh"),
    context_command=("bash", "tools/k8s/build.sh", "spark-operator"),
    fixed_tag=SPARK_OPERATOR_VERSION,
)

ARGO_WORKFLOWS_VERSION = "3.7.18"

#: Argo Workflows (tools/k8s/argo-workflows): workflow-controller, argoexec and argo (CLI, server and UI) from
#: Go modules and npm, built by tools/k8s/build.sh into the user's cache, which is this image's build context.
ARGO_IMAGE = Image(
    name="argo",
    repository="filedrop-argo",
    dockerfile="tools/k8s/argo-workflows/Dockerfile",
    bases=("static",),
    inputs=("tools/k8s/argo-workflows/Dockerfile", "tools/k8s/argo-workflows/go.mod",
            "tools/k8s/argo-workflows/go.sum", "tools/k8s/build.sh", "tools/k8s/argo-ui"),
    context_command=("bash", "tools/k8s/build.sh", "argo-workflows"),
    fixed_tag=ARGO_WORKFLOWS_VERSION,
)

IMAGES = {i.name: i for i in (FILEDROP_IMAGE, SPARK_IMAGE, SPARK_OPERATOR_IMAGE, ARGO_IMAGE)}

#: never part of an image (the same names as .dockerignore) and so never part of a key
IGNORED_NAMES = frozenset({"__pycache__", ".pytest_cache", "target", "logs", "dbt_packages", ".user.yml"})
IGNORED_SUFFIXES = (".pyc", ".egg-info")


def input_files(root: Path, inputs: Iterable[str]) -> Iterator[Path]:
    """The files under `inputs` (relative to `root`) that a build copies, in a stable order."""
    for name in inputs:
        path = root / name
        if path.is_file():
            yield path
        elif path.is_dir():
            for p in sorted(path.rglob("*")):
                rel = p.relative_to(root).parts
                if p.is_file() and not any(part in IGNORED_NAMES or part.endswith(IGNORED_SUFFIXES) for part in rel):
                    yield p


def digest(parts: Iterable[tuple[str, bytes]]) -> str:
    """sha256 over named byte strings; a name or a content change changes it."""
    h = hashlib.sha256()
    for name, data in parts:
        h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()


def base_key(base: Base, root: Path, host_ca_bundle: bytes) -> str:
    """What a base image is made of: its recipe, the files its hooks read, the CA bundle trusted at build time."""
    parts = [("recipe", json.dumps(asdict(base), sort_keys=True).encode()), ("mirrors", "\n".join(MIRRORS).encode()),
             ("dpkg", "\n".join(DPKG_OPTIONS).encode()), ("ca", host_ca_bundle)]
    parts += [(f, (root / f).read_bytes()) for f in base.files]
    return digest(parts)


def image_key(image: Image, root: Path, tag: str, base_keys: dict[str, str]) -> str:
    """What an image is made of: the Dockerfile, the files it copies, its bases' keys and its name."""
    parts = [("ref", image.ref(tag).encode())]
    parts += [(f"base:{b}", base_keys[b].encode()) for b in image.bases]
    parts += [(str(p.relative_to(root)), p.read_bytes()) for p in input_files(root, image.inputs)]
    return digest(parts)


def build_args(image: Image) -> dict[str, str]:
    """The --build-arg values that point the Dockerfile at the local bases."""
    return {BASES[b].build_arg: BASES[b].ref for b in image.bases}
