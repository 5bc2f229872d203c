"""Build and run docker/Dockerfile without a Docker engine: Debian's buildah and podman.

The base is a Debian 12 root file system made by ``debootstrap`` (image registries are
not reachable here, so ``python:3.11-slim-bookworm`` cannot be pulled), imported with
``podman import`` and cached: the tarball under ``$QSWEEP_CONTAINER_CACHE`` (default
``~/.cache/qsweep/containers``) and the imported image ``localhost/qsweep-test-base:KEY``
both stay between runs. KEY hashes the recipe and the Debian mirror; a base older than
:data:`MAX_AGE_DAYS` is rebuilt, and bases of other keys are removed. ``podman run``
fails here (crun cannot set RLIMIT_NOFILE), so both the build and the runs use
``--isolation chroot``::

    base = cached_base()
    image = build_image(base, "localhost/qsweep-test:cpu", tmp_dir)
    buildah("run", "--isolation", "chroot", container, "--", "qsweep", "--help")
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
BASE_REPO = "localhost/qsweep-test-base"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
MAX_AGE_DAYS = 30  # Debian point releases and security fixes: rebuild a month-old base
# What the base image is made of; any change here gives a new cache key.
RECIPE = {
    "suite": "bookworm",
    "variant": "minbase",
    "include": ["python3", "python3-venv", "python3-pip"],
    # what a real base image (python:3.11-slim) sets, and a podman import does not
    "changes": [
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV LANG=C.UTF-8",
        'CMD ["/bin/bash"]',
    ],
}


def cache_dir() -> Path:
    env = os.environ.get("QSWEEP_CONTAINER_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "qsweep" / "containers"


def run(*args: str, timeout: float = 1800, **kw) -> subprocess.CompletedProcess:
    """Run a command; on failure raise with the end of its output."""
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, **kw)
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args[:4])} ... exited {done.returncode}:\n"
            f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        )
    return done


def buildah(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    return run("buildah", *args, timeout=timeout)


def image_exists(name: str) -> bool:
    return subprocess.run(["buildah", "inspect", "--type", "image", name],
                          capture_output=True).returncode == 0  # fmt: skip


def debian_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The Debian archive apt already uses for bookworm (sources.list or deb822 .sources)."""
    files = [sources / "sources.list", *sorted((sources / "sources.list.d").glob("*"))]
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":  # deb822: blocks of "Key: value" lines
            for block in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", block, flags=re.M))
                if "bookworm" in fields.get("Suites", "").split():
                    return fields["URIs"].split()[0].rstrip("/")
        else:  # one-line style: deb [options] URI suite components...
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
                if len(words) >= 3 and words[0] == "deb" and words[2] == "bookworm":
                    return words[1].rstrip("/")
    return DEFAULT_MIRROR


def base_key(mirror: str) -> str:
    blob = json.dumps({**RECIPE, "mirror": mirror}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def cached_base(mirror: str | None = None, log=print) -> str:
    """The base image ``localhost/qsweep-test-base:KEY``, made or refreshed as needed."""
    mirror = mirror or debian_mirror()
    key = base_key(mirror)
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    tarball = cache / f"bookworm-py-{key}.tar"
    tag = f"{BASE_REPO}:{key}"
    fresh = tarball.is_file() and time.time() - tarball.stat().st_mtime < MAX_AGE_DAYS * 86400
    for old in cache.glob("bookworm-py-*"):  # other recipes, stale, or half-written
        if old != tarball or not fresh:
            old.unlink()
    _remove_other_bases(keep=tag if fresh else None)
    if not fresh:
        for old in cache.glob("rootfs-*"):  # left by an interrupted debootstrap
            shutil.rmtree(old)
        rootfs = cache / f"rootfs-{key}"
        start = time.monotonic()
        run("debootstrap", f"--variant={RECIPE['variant']}",
            f"--include={','.join(RECIPE['include'])}", RECIPE["suite"], str(rootfs), mirror)  # fmt: skip
        partial = tarball.with_suffix(".partial")
        run("tar", "-C", str(rootfs), "-cf", str(partial), ".")
        partial.rename(tarball)  # a half-written tarball is never taken for a base
        shutil.rmtree(rootfs)
        log(f"debootstrap {RECIPE['suite']} from {mirror}: {time.monotonic() - start:.0f} s")
    if not image_exists(tag):
        start = time.monotonic()
        changes = [a for c in RECIPE["changes"] for a in ("--change", c)]
        run("podman", "import", *changes, str(tarball), tag)
        log(f"podman import {tarball.name}: {time.monotonic() - start:.0f} s")
    return tag


def _remove_other_bases(keep: str | None) -> None:
    listed = subprocess.run(
        ["buildah", "images", "--json", "--filter", f"reference={BASE_REPO}"],
        capture_output=True,
        text=True,
    )
    if listed.returncode != 0 or not listed.stdout.strip():
        return
    for image in json.loads(listed.stdout):
        for name in image.get("names") or []:
            if name != keep:
                subprocess.run(["buildah", "rmi", "-f", name], capture_output=True)


def torch_pin() -> str:
    """The torch version pinned in pyproject.toml (the Dockerfile reads the same pin)."""
    import tomllib  # Python 3.11+, like the image

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        found = re.fullmatch(r"torch\s*==\s*([0-9][0-9.]*)", dep.strip())
        if found:
            return found.group(1)
    raise ValueError("pyproject.toml pins no torch==X.Y.Z")


def _pip_setting(name: str) -> str:
    """A pip setting as the host's pip sees it: PIP_* environment, then pip's config."""
    env = os.environ.get(f"PIP_{name.upper().replace('-', '_')}")
    if env:
        return env
    got = subprocess.run([sys.executable, "-m", "pip", "config", "get", f"global.{name}"],
                         capture_output=True, text=True)  # fmt: skip
    return got.stdout.strip() if got.returncode == 0 else ""


def local_pip_mounts(tmp: Path, torch: str = "cpu") -> tuple[list[str], list[str]]:
    """Build arguments and volumes that let pip in the build use what the host's pip uses:
    for ``torch="cpu"`` a find-links directory that holds the CPU wheel of the pinned torch
    (no download from the PyTorch CPU index, which may be unreachable; never for "cuda",
    where ``torch==X`` would take that ``X+cpu`` wheel), and the host's CA bundle (for a
    proxy that re-signs TLS). Returns (build args, buildah -v specs); both empty when the
    host has neither, and the build then uses the registries alone."""
    wheel = f"torch-{torch_pin()}+cpu-cp311-*.whl"  # Debian 12's Python is 3.11
    links = [d for d in _pip_setting("find-links").split() if Path(d).is_dir()]
    with_torch = [d for d in links if torch == "cpu" and any(Path(d).glob(wheel))]
    cert = _pip_setting("cert")
    lines, volumes, args = ["[global]"], [], []
    if with_torch:
        lines.append(f"find-links = {with_torch[0]}")
        volumes.append(f"{with_torch[0]}:{with_torch[0]}:ro")
        # the wheel comes from find-links, its dependencies (sympy, ...) from PyPI
        args += ["--build-arg", "TORCH_CPU_INDEX=https://pypi.org/simple"]
    if cert and Path(cert).is_file():
        lines.append("cert = /run/qsweep-build/ca.pem")
        volumes.append(f"{cert}:/run/qsweep-build/ca.pem:ro")
    if not volumes:
        return args, []
    conf = tmp / "pip.conf"
    conf.write_text("\n".join(lines) + "\n")
    return args, [f"{conf}:/etc/pip.conf:ro", *volumes]


def build_image(base: str, tag: str, tmp: Path, *, torch: str = "cpu") -> None:
    """``buildah build`` docker/Dockerfile on ``base`` (without --layers: no intermediate
    images are kept, and a failed build removes its container)."""
    args, volumes = local_pip_mounts(tmp, torch)
    buildah(
        "build", "--isolation", "chroot", "-f", str(DOCKERFILE),
        "--build-arg", f"BASE={base}", "--build-arg", f"TORCH={torch}", *args,
        *[a for v in volumes for a in ("-v", v)], "-t", tag, str(ROOT),
        timeout=3600,
    )  # fmt: skip


def image_size(tag: str) -> int:
    """Bytes of the image's layers, as ``podman images`` reports them."""
    done = run("podman", "image", "inspect", "--format", "{{.Size}}", tag)
    return int(done.stdout.strip())
