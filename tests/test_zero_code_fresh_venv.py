"""The README's zero-code command, exactly as written, in a fresh virtual environment.

A new venv gets what the README installs (this project and opentelemetry-distro,
from the pip cache), then the README's command runs ``examples/zero_code_agent.py``
as ``app.py``: it must be served hints. Left without the exporter variables, the
same command must print the documented message instead, once.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest

from otel_adaptive._startup import EXPORTERS_OFF

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
#: The README marks its zero-code commands with this comment, right before the block.
MARKER = "<!-- zero-code-command -->"
DOCUMENTED_MESSAGE = "so otel-adaptive is NOT active"


def readme_command() -> tuple[list[str], str]:
    """The install lines and the run command of the README's zero-code block."""
    text = README.read_text(encoding="utf-8")
    block = re.search(re.escape(MARKER) + r"\s*```bash\n(.*?)```", text, re.S)
    assert block is not None, f"README.md has no {MARKER} block"
    lines = block.group(1).replace("\\\n", " ").splitlines()
    installs = [line for line in lines if line.startswith("pip install")]
    [command] = [line for line in lines if "opentelemetry-instrument" in line]
    return installs, " ".join(command.split())


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("fresh")
    venv.create(home / "venv", with_pip=True)
    installs, _ = readme_command()
    assert installs == ["pip install otel-adaptive opentelemetry-distro"]
    # The project is installed from this checkout instead of PyPI; the rest as written.
    pip = [str(home / "venv" / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run(
        [*pip, str(ROOT), "opentelemetry-distro"],
        check=True,
        timeout=540,
        capture_output=True,
        env=_clean_env(home),
    )
    shutil.copy(ROOT / "examples" / "zero_code_agent.py", home / "app.py")
    yield home


def _clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "VIRTUAL_ENV"))}
    env["PATH"] = f"{home / 'venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PYTHONPATH", None)
    return env


def _run(home: Path, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", command],
        cwd=home,
        capture_output=True,
        text=True,
        timeout=120,
        env=_clean_env(home),
        check=False,
    )


@pytest.mark.timeout(900)
def test_the_readme_zero_code_command_serves_hints_to_the_app(fresh_venv: Path) -> None:
    _, command = readme_command()
    assert command.startswith("OTEL_ADAPTIVE_ENABLED=true " + EXPORTERS_OFF)
    result = _run(fresh_venv, command)
    assert result.returncode == 0, result.stderr
    assert "hints served after" in result.stdout
    assert '"osl": 60' in result.stdout  # what the first call of each run produced
    assert DOCUMENTED_MESSAGE not in result.stderr


@pytest.mark.timeout(900)
def test_without_the_exporter_variables_the_documented_message_says_why_once(
    fresh_venv: Path,
) -> None:
    _, command = readme_command()
    result = _run(fresh_venv, command.replace(EXPORTERS_OFF + " ", "") + " --seconds 2")
    assert result.returncode == 1  # the app got no hints
    assert result.stderr.count(DOCUMENTED_MESSAGE) == 1
    message = next(line for line in result.stderr.splitlines() if DOCUMENTED_MESSAGE in line)
    assert "Requested component 'otlp_proto_grpc' not found" in message
    assert EXPORTERS_OFF in message and "pip install opentelemetry-exporter-otlp" in message
    readme = README.read_text(encoding="utf-8")
    assert DOCUMENTED_MESSAGE in readme and EXPORTERS_OFF in readme


def test_the_startup_check_is_installed_with_the_package(fresh_venv: Path) -> None:
    python = fresh_venv / "venv" / "bin" / "python"
    result = subprocess.run(
        [str(python), "-c", "import sys, site; print(site.getsitepackages()[0])"],
        capture_output=True,
        text=True,
        check=True,
        env=_clean_env(fresh_venv),
    )
    pth = Path(result.stdout.strip()) / "otel_adaptive.pth"
    assert pth.is_file()
    # Without opentelemetry-instrument the start-up line imports nothing of ours.
    quiet = subprocess.run(
        [str(python), "-c", "import sys; print('otel_adaptive' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
        env={**_clean_env(fresh_venv), "OTEL_ADAPTIVE_ENABLED": "true"},
    )
    assert quiet.stdout.strip() == "False"
