"""Container definitions (docker/Dockerfile, docker/qsweep.def) without a Docker or
Apptainer engine: instructions and sections are known, the paths they copy exist, the
extras and entry points they name are in pyproject.toml, shell bodies parse."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

DOCKER_DIR = Path(__file__).resolve().parents[1] / "docker"
REPO = DOCKER_DIR.parent
DOCKERFILE_KEYWORDS = {
    "FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
    "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
}  # fmt: skip
APPTAINER_SECTIONS = {
    "%setup", "%files", "%environment", "%post", "%runscript", "%startscript", "%test",
    "%labels", "%help", "%arguments",
}  # fmt: skip


def _pyproject() -> dict:
    import tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = (DOCKER_DIR / "Dockerfile").read_text()
    logical = re.sub(r"\\\n", " ", text)  # join continuation lines
    out = []
    for line in logical.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword, rest.strip()))
    return out


def test_dockerfile_instructions_and_paths_exist() -> None:
    instructions = _dockerfile_instructions()
    assert instructions[0][0] == "FROM"
    for keyword, _ in instructions:
        assert keyword in DOCKERFILE_KEYWORDS, f"unknown Dockerfile instruction {keyword}"
    for keyword, rest in instructions:
        if keyword == "COPY":
            *sources, _dest = rest.split()
            for src in sources:
                assert (REPO / src).exists(), f"COPY source {src} missing from the repo"
    args = dict(r.split("=", 1) for k, r in instructions if k == "ARG" and "=" in r)
    extras = set(_pyproject()["project"]["optional-dependencies"])
    assert args["QSWEEP_EXTRAS"] in extras
    entry = next(r for k, r in instructions if k == "ENTRYPOINT")
    assert re.findall(r'"([^"]+)"', entry)[0] in _pyproject()["project"]["scripts"]
    env = next(r for k, r in instructions if k == "ENV")
    template = re.search(r"QSWEEP_SLURM_TEMPLATE=(\S+)", env).group(1)
    assert (REPO / Path(template).relative_to("/opt/qsweep")).is_file()


def test_apptainer_definition_sections_and_paths_exist() -> None:
    text = (DOCKER_DIR / "qsweep.def").read_text()
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    header = dict(ln.split(":", 1) for ln in lines if not ln.startswith(("%", " ", "\t")))
    assert header["Bootstrap"].strip() == "docker" and header["From"].strip()
    sections: dict[str, list[str]] = {}
    current = None
    for ln in lines:
        if ln.startswith("%"):
            current = ln.split()[0]
            assert current in APPTAINER_SECTIONS, f"unknown Apptainer section {current}"
            assert current not in sections, f"section {current} appears twice"
            sections[current] = []
        elif current:
            sections[current].append(ln.strip())
    assert {"%files", "%post", "%runscript"} <= set(sections)
    for entry in sections["%files"]:
        src, dest = entry.split()
        assert (REPO / src).exists(), f"%files source {src} missing from the repo"
        assert dest.startswith("/opt/qsweep/")
    post = "\n".join(sections["%post"])
    extras = set(re.findall(r"/opt/qsweep\[([a-z0-9_-]+)\]", post))
    assert extras and extras <= set(_pyproject()["project"]["optional-dependencies"])
    runscript = sections["%runscript"][0].split()
    assert runscript[:2] == ["exec", "qsweep"] and "qsweep" in _pyproject()["project"]["scripts"]
    for section in ("%post", "%runscript", "%test", "%environment"):
        body = "\n".join(sections.get(section, []))
        proc = subprocess.run(["bash", "-n"], input=body, text=True, capture_output=True)
        assert proc.returncode == 0, f"{section}: {proc.stderr}"
