"""``python -m otel_adaptive.cli``: the same as the ``otel-adaptive`` command."""

from __future__ import annotations

import sys

from otel_adaptive.cli import main

sys.exit(main())
