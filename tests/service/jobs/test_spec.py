"""The job contract: results stored by an older worker must still read back."""

from __future__ import annotations

from service.jobs.spec import JobResult


def test_a_result_stored_before_cache_entries_were_authenticated_still_parses() -> None:
    old = {
        "method": "eraser",
        "calibration_set_id": "ab" * 32,
        "rows": 10,
        "tuning_rows": 7,
        "verdict_rows": 3,
        "cached_outputs": True,
        "patches": [],
        "timings_s": {"query": 0.1},
    }
    result = JobResult.model_validate(old)
    assert result.cache_entry_refused is None and result.cached_outputs
