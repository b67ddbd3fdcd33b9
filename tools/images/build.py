"""Build the local bases and the repository's images with buildah, only when their inputs changed.

    python -m tools.images build [--tag dev] [--image filedrop|spark]... [--force]
    python -m tools.images check [--tag dev]   # run smoke commands in each archive with runc (check.py)
    python -m tools.images clean          # remove the buildah storage, archives and the result file

Everything lives in ${XDG_CACHE_HOME:-~/.cache}/filedrop/images (CACHE): buildah's storage (storage/, run/),
Maven's local repository and the pyspark wheel reused across builds (m2/, wheels/), the OCI archives
(<repository>-<tag>.oci.tar, importable with `ctr -n k8s.io images import`) and result.json, which records
for each image its ref, archive, sizes, digest and cache key. Runs as root (mmdebstrap's root mode, buildah).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tools.images.check import check
from tools.images.recipes import (
    BASES,
    DPKG_OPTIONS,
    IMAGES,
    MIRRORS,
    REPO,
    SUITE,
    WHEELS_DIR,
    Base,
    Image,
    base_key,
    build_args,
    image_key,
)

HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


class ImageBuildError(RuntimeError):
    pass


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "filedrop" / "images"


def log(message: str) -> None:
    print(f"images: {message}", file=sys.stderr, flush=True)


def human(n: object) -> str:
    return f"{int(str(n)) / 1e6:.0f} MB"


@dataclass(frozen=True)
class Buildah:
    """buildah with its storage under the cache directory (never /var/lib/containers, never the repository)."""

    cache: Path

    def command(self, *args: str) -> list[str]:
        return ["buildah", "--root", str(self.cache / "storage"), "--runroot", str(self.cache / "run"),
                "--storage-driver", "overlay", *args]

    def run(self, *args: str, quiet: bool = False, show: bool = False) -> str:
        """Run buildah; its stdout is returned, or with show=True passed on to stderr (a build's progress)."""
        proc = subprocess.run(self.command(*args), stdout=sys.stderr if show else subprocess.PIPE,
                              stderr=subprocess.DEVNULL if quiet else None, text=True)
        if proc.returncode != 0:
            raise ImageBuildError(f"buildah {args[0]} failed (exit {proc.returncode})")
        return "" if show else proc.stdout.strip()

    def exists(self, ref: str) -> bool:
        return subprocess.run(self.command("inspect", "--type", "image", ref), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL).returncode == 0

    def size(self, ref: str) -> int:
        """Unpacked size in bytes: the image's layers as stored (`buildah images` shows it only rounded).

        Read from containers/storage's overlay-images/images.json and overlay-layers/layers.json.
        """
        storage = self.cache / "storage"
        image_id = self.run("inspect", "--type", "image", "--format", "{{.FromImageID}}", ref)
        images = json.loads((storage / "overlay-images" / "images.json").read_text())
        layers = {la["id"]: la for la in json.loads((storage / "overlay-layers" / "layers.json").read_text())}
        [image] = [i for i in images if i["id"] == image_id]
        total, layer = 0, image.get("layer")
        while layer:
            total += int(layers[layer].get("diff-size", 0))
            layer = layers[layer].get("parent")
        return total

    @contextlib.contextmanager
    def scratch(self, name: str) -> Iterator[str]:
        """A working container from scratch, removed whatever happens."""
        if self._container_exists(name):  # left by an interrupted run
            self.run("rm", name, quiet=True)
        container = self.run("from", "--name", name, "scratch")
        try:
            yield container
        finally:
            if self._container_exists(container):
                self.run("rm", container, quiet=True)

    def _container_exists(self, name: str) -> bool:
        return subprocess.run(self.command("inspect", "--type", "container", name), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL).returncode == 0


def fetch_wheel(spec: str, wheels: Path) -> Path:
    """The wheel of `spec` (e.g. pyspark==4.3.0), built once with the host's pip (pyspark is an sdist on PyPI)."""
    name, _, version = spec.partition("==")
    found = sorted(wheels.glob(f"{name}-{version}-*.whl"))
    if not found:
        log(f"fetching {spec} with pip into {wheels}")
        wheels.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(wheels),
                        spec], check=True)
        found = sorted(wheels.glob(f"{name}-{version}-*.whl"))
    if not found:
        raise ImageBuildError(f"pip made no wheel of {spec} in {wheels}")
    return found[-1]


def mmdebstrap_command(base: Base, target: Path, wheel: Path | None) -> list[str]:
    values = {"python": shlex.quote(sys.executable), "repo": shlex.quote(str(REPO)),
              "host_ca_bundle": shlex.quote(str(HOST_CA_BUNDLE)), "wheel": shlex.quote(str(wheel or ""))}
    cmd = ["mmdebstrap", "--variant=minbase", "--include=" + ",".join(base.packages)]
    cmd += [f"--dpkgopt={o}" for o in DPKG_OPTIONS]
    # without manual pages, update-alternatives (run by openjdk's postinst) still links into man1
    cmd += ['--essential-hook=mkdir -p "$1/usr/share/man/man1"']
    cmd += [f"--customize-hook={hook.format(**values)}" for hook in base.hooks]
    return [*cmd, SUITE, str(target), *MIRRORS]


def config_args(base: Base, key: str) -> list[str]:
    args = [a for k, v in base.env for a in ("--env", f"{k}={v}")]
    args += ["--label", f"dev.filedrop.base-key={key}", "--label", f"dev.filedrop.stands-in-for={base.stands_in_for}"]
    args += ["--user", base.user or "0", "--workingdir", base.workdir or "/"]
    args += ["--entrypoint", json.dumps(list(base.entrypoint)) if base.entrypoint else ""]
    args += ["--cmd", shlex.join(base.cmd)]
    return args


def build_base(buildah: Buildah, base: Base, cache: Path, force: bool) -> str:
    """Make `base` unless an image of the same key is in the store; return its key."""
    key = base_key(base, REPO, HOST_CA_BUNDLE.read_bytes())
    stamp = cache / "bases" / f"{base.name}.key"
    if not force and stamp.is_file() and stamp.read_text() == key and buildah.exists(base.ref):
        log(f"base {base.name}: up to date ({base.ref})")
        return key
    wheel = fetch_wheel(base.wheel, cache / "wheels") if base.wheel else None
    log(f"base {base.name}: mmdebstrap {SUITE} + {', '.join(base.packages)} (a few minutes)")
    start = time.monotonic()
    with buildah.scratch(f"filedrop-base-{base.name}") as container:
        root = Path(buildah.run("mount", container))
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        subprocess.run(mmdebstrap_command(base, root, wheel), env=env, check=True)
        buildah.run("umount", container)
        buildah.run("config", *config_args(base, key), container)
        buildah.run("commit", "--quiet", "--rm", container, base.ref, quiet=True)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(key)
    log(f"base {base.name}: built in {time.monotonic() - start:.0f} s, {human(buildah.size(base.ref))} ({base.ref})")
    return key


def write_archive(buildah: Buildah, ref: str, archive: Path) -> str:
    """Push `ref` as an OCI image-layout tar whose index names it the way containerd's import reads it."""
    work = archive.with_name(archive.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    digestfile = archive.with_name(archive.name + ".digest")
    buildah.run("push", "--quiet", "--digestfile", str(digestfile), ref, f"oci:{work}:{ref}", quiet=True)
    index_path = work / "index.json"
    index = json.loads(index_path.read_text())
    for manifest in index["manifests"]:
        # `ctr images import` names the image by io.containerd.image.name when present (the OCI ref.name
        # annotation alone is treated as a tag under --base-name)
        manifest.setdefault("annotations", {})["io.containerd.image.name"] = ref
    index_path.write_text(json.dumps(index))
    tmp = archive.with_name(archive.name + ".tmp")
    with tarfile.open(tmp, "w") as tar:
        for path in sorted(work.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(work)), recursive=False)
    tmp.replace(archive)
    shutil.rmtree(work)
    digest = digestfile.read_text().strip()
    digestfile.unlink()
    return digest


def build_image(buildah: Buildah, image: Image, tag: str, base_keys: dict[str, str], cache: Path,
                previous: dict[str, object], force: bool) -> dict[str, object]:
    ref = image.ref(tag)
    key = image_key(image, REPO, tag, base_keys)
    archive = archive_path(cache, image, tag)
    if not force and previous.get("key") == key and archive.is_file() and buildah.exists(ref):
        log(f"{image.name}: up to date ({ref}, {archive})")
        return {**previous, "status": "cached"}
    log(f"{image.name}: buildah bud -f {image.dockerfile} ({ref})")
    # the wheel cache, where the local bases' PIP_FIND_LINKS looks (recipes.WHEELS_DIR)
    (cache / "wheels").mkdir(parents=True, exist_ok=True)
    volumes = ["--volume", f"{cache / 'wheels'}:{WHEELS_DIR}:ro"]
    if image.maven_repository:
        (cache / "m2").mkdir(parents=True, exist_ok=True)
        volumes += ["--volume", f"{cache / 'm2'}:{image.maven_repository}"]
    args = [a for k, v in build_args(image).items() for a in ("--build-arg", f"{k}={v}")]
    start = time.monotonic()
    context = str(REPO)
    if image.context_command:
        made = subprocess.run(image.context_command, cwd=REPO, stdout=subprocess.PIPE, text=True)
        if made.returncode != 0 or not made.stdout.strip():
            raise ImageBuildError(f"{shlex.join(image.context_command)} failed (exit {made.returncode})")
        context = made.stdout.strip().splitlines()[-1]
    buildah.run("bud", "--layers", "--pull=never", "--network=host", "--force-rm", *volumes, *args,
                "--file", str(REPO / image.dockerfile), "--tag", ref, context, show=True)
    built = time.monotonic() - start
    digest = write_archive(buildah, ref, archive)
    result: dict[str, object] = {
        "ref": ref, "archive": str(archive), "archive_bytes": archive.stat().st_size,
        "unpacked_bytes": buildah.size(ref), "digest": digest, "key": key, "dockerfile": image.dockerfile,
        "build_args": build_args(image), "build_seconds": round(built, 1),
        "archive_seconds": round(time.monotonic() - start - built, 1), "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "status": "built",
    }
    return result


def archive_path(cache: Path, image: Image, tag: str) -> Path:
    return cache / f"{image.repository}-{image.tag(tag)}.oci.tar"


@contextlib.contextmanager
def locked(cache: Path) -> Iterator[None]:
    """One build at a time per cache directory."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def build(names: Sequence[str], tag: str, force: bool) -> dict[str, object]:
    cache = cache_dir()
    buildah = Buildah(cache)
    result_path = cache / "result.json"
    with locked(cache):
        previous = json.loads(result_path.read_text()) if result_path.is_file() else {}
        images = [IMAGES[n] for n in names]
        wanted = sorted({b for i in images for b in i.bases})
        base_keys = {b: build_base(buildah, BASES[b], cache, force) for b in wanted}
        results = dict(previous.get("images", {}))
        for image in images:
            start = time.monotonic()
            name = f"{image.name}:{image.tag(tag)}"
            old = results.get(name, {})
            entry = build_image(buildah, image, tag, base_keys, cache, old, force)
            results[name] = entry
            # written after each image, so a failure later keeps what was done
            result_path.write_text(json.dumps({"images": results}, indent=2) + "\n")
            log(f"{image.name}: {entry['status']} in {time.monotonic() - start:.1f} s: {entry['ref']}"
                f"  archive {human(entry['archive_bytes'])} (unpacked {human(entry['unpacked_bytes'])})"
                f"  {entry['archive']}")
        if any(results[f"{i.name}:{i.tag(tag)}"]["status"] == "built" for i in images):
            # a rebuilt image leaves its predecessor untagged: about a GB per filedrop change, which fills
            # the disk over a day of builds (the tagged images and the bases stay, and so does their cache)
            pruned = subprocess.run(buildah.command("rmi", "--prune"), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True)
            if pruned.returncode != 0:
                log(f"could not remove untagged images (buildah rmi --prune, exit {pruned.returncode}): "
                    f"{pruned.stderr.strip()[-300:]}")
        log(f"result: {result_path}")
        return {"images": results}


def archives(names: Sequence[str], tag: str) -> dict[str, Path]:
    """Build what changed of the images ``names`` and return each one's OCI archive (for `ctr images import`)."""
    built: dict[str, dict[str, str]] = build(names, tag, force=False)["images"]  # type: ignore[assignment]
    return {name: Path(built[f"{name}:{IMAGES[name].tag(tag)}"]["archive"]) for name in names}


def clean() -> None:
    cache = cache_dir()
    with locked(cache):
        buildah = Buildah(cache)
        if (cache / "storage").exists():
            subprocess.run(buildah.command("rm", "--all"), check=False)
            subprocess.run(buildah.command("rmi", "--all", "--force"), check=False, stdout=subprocess.DEVNULL)
        for name in ("storage", "run", "bases"):
            shutil.rmtree(cache / name, ignore_errors=True)
        for path in [*cache.glob("*.oci.tar"), cache / "result.json"]:
            path.unlink(missing_ok=True)
    log(f"removed the images and buildah storage under {cache} (m2/ and wheels/ kept)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.images", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build what changed")
    b.add_argument("--tag", default=os.environ.get("FILEDROP_IMAGE_TAG", "dev"))
    b.add_argument("--image", action="append", choices=sorted(IMAGES), help="only this image (repeatable)")
    b.add_argument("--force", action="store_true", help="rebuild the bases and images even when up to date")
    c = sub.add_parser("check", help="run smoke commands in the archives with runc")
    c.add_argument("--tag", default=os.environ.get("FILEDROP_IMAGE_TAG", "dev"))
    sub.add_parser("clean", help="remove the buildah storage, the archives and result.json")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            build(args.image or sorted(IMAGES), args.tag, args.force)
        elif args.command == "check":
            archives = {i.name: archive_path(cache_dir(), i, args.tag) for i in IMAGES.values()}
            return 0 if check(archives) else 1
        else:
            clean()
    except (ImageBuildError, subprocess.CalledProcessError) as exc:
        log(f"failed: {exc}")
        return 1
    return 0
