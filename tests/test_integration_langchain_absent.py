"""``otel_adaptive.integrations.langchain`` without LangChain or OpenInference installed."""

from __future__ import annotations

import subprocess
import sys

# Blocks the imports the bridge makes lazily, as if the packages were not installed.
_SCRIPT = """
import sys
for name in ("langchain_core", "openinference", "openinference.instrumentation",
             "openinference.instrumentation.langchain"):
    sys.modules[name] = None
from opentelemetry.sdk.trace import TracerProvider
from otel_adaptive import AdaptiveConfig, AdaptiveSpanProcessor
from otel_adaptive.integrations import langchain as bridge
provider = TracerProvider()
provider.add_span_processor(AdaptiveSpanProcessor(AdaptiveConfig(schedule_delay_millis=60000)))
assert bridge.langchain_run_span() is None
assert bridge.current_hints() is None
body = {}
assert bridge.inject_hints(body) is None and body == {}
with bridge.use_langchain_run_span():
    pass
provider.shutdown()
print("ok")
"""


def test_bridge_imports_and_answers_none_without_langchain() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
