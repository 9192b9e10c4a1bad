"""Every test the conformance matrix in docs/semantic-conventions.md names exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "semantic-conventions.md"
MODULES = {
    "agents": "test_openai_agents.py",
    "v2": "test_openai_v2.py",
    "oi-openai": "test_openinference_openai.py",
    "langchain": "test_langchain.py",
    "openllmetry": "test_openllmetry.py",
    "pydantic-ai": "test_pydantic_ai.py",
    "langgraph": "test_langgraph.py",
    "smolagents": "test_smolagents.py",
    "crewai": "test_crewai.py",
    "traceloop": "test_traceloop.py",
}
_REFERENCE = re.compile(r"`([a-z0-9-]+)::(test_\w+)")


def test_every_test_the_matrix_names_exists() -> None:
    references = _REFERENCE.findall(DOC.read_text(encoding="utf-8"))
    assert {short for short, _ in references} == set(MODULES)  # every module has a row
    missing = []
    for short, name in references:
        source = (ROOT / "tests" / "conformance" / MODULES[short]).read_text(encoding="utf-8")
        if not re.search(rf"^def {name}\(", source, re.MULTILINE):
            missing.append(f"{short}::{name}")
    assert missing == []
