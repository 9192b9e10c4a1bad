"""The exporter's counters, shared by its parts (all touched by the exporter thread only)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class ExporterCounters:
    """What the exporter did; ``docs/operations.md`` says what each one means."""

    spans_started: int = 0
    spans_ended: int = 0
    runs_stored: int = 0
    runs_not_written: int = 0
    runs_unstorable: int = 0
    runs_dropped_buffer_full: int = 0
    runs_learned: int = 0
    batches_merged: int = 0
    batches_deduplicated: int = 0
    batches_unstorable: int = 0
    batches_dropped_buffer_full: int = 0
    learned_fields_dropped: int = 0
    agents_over_limit: int = 0
    agents_evicted: int = 0
    learner_errors: int = 0
    store_errors: int = 0
    exporter_errors: int = 0
    refreshes: int = 0
    agents_refreshed: int = 0
    refresh_errors: int = 0
