"""`make bench-reliability`: the gateway loses nothing and serves nothing tampered while Redis or
the black box fails.

Real processes on loopback only: a dedicated ``redis-server`` (append-only file in a temporary
directory, so it can be killed, stopped and restarted with or without its data), the stand-in
black box, three gateway replicas and, for the poisoned-cache scenario, one training worker.
Modules, one job each:

- ``system``      — the processes and the knobs the faults turn (kill, SIGSTOP, wipe, restart);
- ``load``        — the open-loop load generator (async httpx, round-robin over replicas);
- ``patches``     — random ONNX patches, their registration and the local ground truth
                    (every answer checked against softmax(log raw − Σ α log G) computed here);
- ``hotswap``, ``redis_faults``, ``upstream``, ``tamper``, ``poisoned_cache``,
  ``body_bombs``, ``fuzz`` — the scenarios;
- ``results``     — ``bench/results/reliability.json``, its targets and ``_meta``;
- ``markdown``    — the generated section of ``BENCHMARKS.md``.
"""
