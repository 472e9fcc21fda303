"""Job progress: stage snapshots reach the publisher, throttled, with each stage's end."""

from __future__ import annotations

from patch_training.jobs.progress import JobProgress


def test_each_stage_publishes_its_start_and_its_completion() -> None:
    seen: list[dict] = []
    progress = JobProgress(publish=seen.append, show_bars=False, min_interval_s=3600)
    with progress.stage("query", 10) as advance:
        for _ in range(10):
            advance(1)
    with progress.stage("train", 5) as advance:
        advance(2)  # early stopping: the stage ends before its total
    assert [(s["stage"], s["done"]) for s in seen] == [
        ("query", 0),
        ("query", 10),
        ("train", 0),
        ("train", 5),
    ]
    assert seen[-1]["fraction"] == 1.0


def test_updates_inside_a_stage_are_published_when_the_interval_allows() -> None:
    seen: list[dict] = []
    progress = JobProgress(publish=seen.append, show_bars=False, min_interval_s=0.0)
    with progress.stage("query", 4) as advance:
        advance(1)
        advance(1)
    assert [s["done"] for s in seen] == [0, 1, 2, 4]
