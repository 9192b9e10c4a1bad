"""Fixtures for the conformance suite: a fake OpenAI server and a provider per test.

Every test gets a fresh ``TracerProvider`` carrying an ``AdaptiveSpanProcessor`` (and an
in-memory exporter, so a failing test can show the raw spans). Instrumentors patch
libraries globally, so each test module instruments with that test's provider in a
fixture and uninstruments in its teardown; nothing here sets the global provider.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conformance_helpers import Harness
from fake_openai_server import FakeOpenAIServer


@pytest.fixture(scope="session")
def fake_openai_server() -> Iterator[FakeOpenAIServer]:
    server = FakeOpenAIServer().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def fake_openai(fake_openai_server: FakeOpenAIServer) -> Iterator[FakeOpenAIServer]:
    """The shared server with an empty script; a test must use every reply it queues."""
    fake_openai_server.reset()
    yield fake_openai_server
    assert fake_openai_server.pending == 0, "the test queued replies it never used"


@pytest.fixture
def harness() -> Iterator[Harness]:
    harness = Harness()
    try:
        yield harness
    finally:
        harness.close()
