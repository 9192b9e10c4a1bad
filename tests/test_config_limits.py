"""Out-of-range numbers are configuration errors naming the setting, never OverflowError."""

from __future__ import annotations

import pytest

from otel_adaptive.config import _SPECS, AdaptiveConfig, ConfigError
from otel_adaptive.processor import AdaptiveSpanProcessor

NUMERIC = [spec for spec in _SPECS if spec.kind in ("int", "float")]
HUGE = [10**400, 2**63, 2**31]
HUGE_FLOATS = [1e300, 1e10, float("inf")]


@pytest.mark.parametrize("spec", NUMERIC, ids=lambda spec: spec.name)
def test_a_huge_number_is_a_config_error_naming_the_setting(spec: object) -> None:
    name = spec.name  # type: ignore[attr-defined]
    values = HUGE + (HUGE_FLOATS if spec.kind == "float" else [])  # type: ignore[attr-defined]
    for value in values:
        with pytest.raises(ConfigError, match=name):
            AdaptiveConfig(**{name: value})
    env_var = spec.env_var  # type: ignore[attr-defined]
    for text in ("9" * 400, str(2**63), "1e300" if spec.kind == "float" else "2147483648"):  # type: ignore[attr-defined]
        with pytest.raises(ConfigError, match=env_var) as raised:
            AdaptiveConfig.from_env({env_var: text})
        assert "<=" in str(raised.value)
        assert len(str(raised.value)) < 400  # the value is shortened, not pasted whole


def test_the_largest_allowed_values_start_and_stop_a_processor() -> None:
    largest: dict[str, object] = {
        spec.name: spec.maximum if spec.kind == "float" else int(spec.maximum or 0)
        for spec in NUMERIC
    }
    largest["shutdown_timeout_millis"] = 1000  # so the test ends in time
    config = AdaptiveConfig(**largest)  # type: ignore[arg-type]
    processor = AdaptiveSpanProcessor(config)
    assert processor.force_flush(1000)
    processor.shutdown()
