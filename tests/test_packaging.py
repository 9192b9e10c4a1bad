"""The built wheel and sdist: LICENSE, metadata, py.typed, the start-up file, no relative links."""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return out


@pytest.mark.timeout(600)
def test_the_wheel_ships_the_license_py_typed_and_full_metadata(dist: Path) -> None:
    [wheel] = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        [metadata_name] = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(archive.read(metadata_name).decode())
        [license_name] = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
        license_text = archive.read(license_name).decode()
    assert "otel_adaptive/py.typed" in names
    assert "otel_adaptive.pth" in names  # the start-up check of zero-code activation
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert "END OF TERMS AND CONDITIONS" in license_text  # the full text, not a stub
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata["License-File"] == "LICENSE"
    assert metadata["Author"] == "otel-adaptive maintainers"
    assert metadata["Maintainer"] == "otel-adaptive maintainers"
    urls = dict(value.split(", ", 1) for value in metadata.get_all("Project-URL") or [])
    assert {"Homepage", "Documentation", "Source", "Issues"} <= urls.keys()
    assert all(url.startswith("https://") for url in urls.values())
    description = metadata.get_payload()
    assert "otel-adaptive" in description
    # PyPI shows the README with no repository around it: every link must be absolute.
    relative = [
        target
        for target in re.findall(r"\]\(([^)]+)\)", description)
        if not target.startswith(("https://", "http://", "#"))
    ]
    assert relative == []


@pytest.mark.timeout(600)
def test_the_sdist_ships_the_license(dist: Path) -> None:
    [sdist] = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        members = [Path(name) for name in archive.getnames()]
    names = {member.relative_to(member.parts[0]).as_posix() for member in members}
    assert {"LICENSE", "pyproject.toml", "README.md", "src/otel_adaptive/py.typed"} <= names


@pytest.mark.timeout(600)
def test_twine_accepts_the_distributions(dist: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *map(str, dist.iterdir())],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
