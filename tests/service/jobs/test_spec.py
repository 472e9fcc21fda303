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


def test_a_patch_outcome_stored_before_label_free_jobs_still_parses() -> None:
    from service.jobs.spec import PatchOutcome

    interval = {"estimate": 1.0, "low": 0.0, "high": 2.0}
    evidence = {"rows": 3, "confidence": 0.9, "draws": 100, "raw": {"eo_bias": interval},
                "fair": {"eo_bias": interval}, "change": {"eo_bias": interval}, "groups": {},
                "group_rows": {}}  # fmt: skip
    old = {"name": "p", "version": 1, "bias": "race", "status": "validated", "reason": "ok",
           "alpha": 1.0, "evidence": evidence, "tuning": {}}  # fmt: skip
    outcome = PatchOutcome.model_validate(old)
    assert outcome.kind is None and outcome.candidates == [] and outcome.choice is None


def test_only_an_fmd_job_names_counterfactual_pairs() -> None:
    import pytest
    from pydantic import ValidationError

    from service.jobs.spec import TrainingJobSpec

    base = {"model": "m", "target": "t", "bias": ["colour"], "pairs_id": "ab" * 32}
    assert TrainingJobSpec.model_validate(base | {"method": "fmd"}).pairs_id == "ab" * 32
    assert TrainingJobSpec.model_validate(base | {"pairs_id": None}).pairs_id is None
    with pytest.raises(ValidationError, match="takes no counterfactual pairs"):
        TrainingJobSpec.model_validate(base)
