"""The black-box client: one per model, shared by the gateway (per request) and the trainer (bulk).

Layers, outermost first, and why each sits where it does:

1. ``predict`` encodes, calls, decodes and normalises to log-probabilities. Decoding sits
   *outside* the breaker: an unusable body is a contract problem, not an outage.
2. Circuit breaker (purgatory's state machine, one circuit per model, open periods backed off
   from ``breaker_reset_s`` up to ``breaker_max_reset_s``). It sees one outcome per
   logical call, after retries. Failures that count: ``UpstreamUnavailable``, ``UpstreamTimeout``,
   ``UpstreamStatus`` >= 500. Not counted — and, as in purgatory's exclude semantics, treated as
   proof of life that resets the consecutive count: 4xx (caller or config fault; the upstream is
   up) and ``UpstreamBadResponse`` (the upstream answers promptly; opening the circuit would only
   replace the precise "3 classes, model has 2" with a vague "circuit open"). A cancelled call
   (the caller gave up) counts as nothing.
3. Retries (tenacity, jittered exponential backoff) only for refused/reset connections and HTTP
   502/503/504. Never for timeouts (the latency budget is already spent), 500 (a model bug that
   will fail again), 4xx, or bad bodies. The first attempt runs outside tenacity because building
   an ``AsyncRetrying`` costs ~30 µs, 3% of the gateway's whole latency budget; tenacity only
   takes over once a retryable failure has happened.
4. One pooled ``aiohttp`` session; every aiohttp/asyncio exception becomes an ``UpstreamError``
   that says what the upstream did (the original stays attached as ``__cause__``).
The breaker itself lives in ``service.upstream.breaker``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from types import TracebackType
from typing import Any, Final, NamedTuple, Self, TypeVar

import aiohttp
import numpy as np
from multidict import CIMultiDict
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)
from yarl import URL

from service.eraser_math import to_log_probs
from service.errors import (
    EraserError,
    InvalidInstances,
    UpstreamBadResponse,
    UpstreamError,
    UpstreamStatus,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from service.oip import HEADER_LENGTH
from service.request_context import upstream_headers
from service.settings import ModelConfig
from service.upstream.breaker import Backoff, BreakerState, CircuitBreaker
from service.upstream.codecs import make_codec

log = logging.getLogger(__name__)

T = TypeVar("T")
EventHook = Callable[[str], None]
ProgressHook = Callable[[int], None]

RETRY_STATUSES: Final = frozenset({502, 503, 504})
_Answer = tuple[bytes, str | None]  # body, and its Inference-Header-Content-Length if any
_MAX_BACKOFF_S: Final = 1.0
_STATUS_BODY_CHARS: Final = 200


def is_retryable(exc: BaseException) -> bool:
    """Transient connection failures and gateway-ish statuses; TLS failures never heal by retry."""
    if isinstance(exc, UpstreamStatus):
        return exc.details.get("upstream_status") in RETRY_STATUSES
    return isinstance(exc, UpstreamUnavailable) and not isinstance(
        exc.__cause__, aiohttp.ClientSSLError
    )


class _Request(NamedTuple):
    """An encoded request: the body, and its JSON header's length when binary data follows."""

    content: bytes
    header_length: int | None


class UpstreamClient:
    """Pooled, retried, circuit-broken access to one model's black box.

    Use as ``async with UpstreamClient(model) as client: log_p = await client.predict(x)``.
    ``on_event`` (also assignable later) receives ``"retry"``, ``"error:<code>"`` for every
    failed ``predict`` (``code`` is the ``EraserError`` code) and ``"breaker_open"`` each time
    the circuit trips; a hook that raises is logged, never propagated.
    """

    def __init__(self, model: ModelConfig, *, on_event: EventHook | None = None) -> None:
        cfg = model.upstream
        self.model = model
        self.on_event = on_event
        self._cfg = cfg
        self._codec = make_codec(model)
        self._url = _checked_url(cfg.url)
        self._shown_url = _display_url(self._url)
        self._input_shape = tuple(model.input.shape)
        # Case-insensitive merge: a configured "content-type" replaces ours instead of doubling it.
        self._headers = CIMultiDict({"Content-Type": "application/json"})
        self._headers.update(cfg.headers)
        self._session: aiohttp.ClientSession | None = None
        self._breaker = CircuitBreaker(
            model.name,
            cfg.breaker_threshold,
            Backoff(cfg.breaker_reset_s, cfg.breaker_backoff_factor, cfg.breaker_max_reset_s),
            trial_budget_s=cfg.connect_timeout_s + cfg.read_timeout_s,
            on_open=self._breaker_opened,
        )

    # ---- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Open the connection pool (inside the running loop, as aiohttp requires). Idempotent."""
        if self._session is not None:
            return
        cfg = self._cfg
        await self._breaker.start()
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=cfg.max_connections),
            timeout=aiohttp.ClientTimeout(
                total=cfg.connect_timeout_s + cfg.read_timeout_s,
                connect=cfg.connect_timeout_s,
                sock_read=cfg.read_timeout_s,
            ),
            headers=self._headers,
            trace_configs=[_request_sent_trace()],
        )

    async def close(self) -> None:
        """Close the pool; safe to call twice."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def breaker_state(self) -> BreakerState:
        """``"closed"``, ``"open"`` or ``"half-opened"``; open turns half-opened on the next call
        after the open period (purgatory moves state on calls, not on a timer)."""
        return self._breaker.state

    def __repr__(self) -> str:
        return f"<UpstreamClient model={self.model.name} url={self._shown_url}>"

    # ---- prediction ----------------------------------------------------------------------

    async def predict(self, x: np.ndarray, sent: asyncio.Future[None] | None = None) -> np.ndarray:
        """Log-probabilities float64 [N, K] for the batch ``x`` [N, *input_shape].

        ``sent``, if given, is resolved once the request body has been handed to the socket, so
        a caller can do CPU work while the upstream computes (see ``_request_sent``).
        """
        return (await self.predict_typed(x, sent))[0]

    async def predict_typed(
        self, x: np.ndarray, sent: asyncio.Future[None] | None = None
    ) -> tuple[np.ndarray, str | None]:
        """``predict``, and the OIP datatype the upstream gave its scores (None: not OIP v2, or
        it gave none), so that the gateway can answer in the upstream's own datatype."""
        n = self._check_batch(x)
        if n == 0:
            return np.empty((0, self.model.num_classes)), None
        request = _Request(*self._codec.encode(x))
        try:
            raw, header_length = await self._breaker.call(
                lambda: self._post_with_retries(request, sent)
            )
            scores, datatype = self._codec.decode_typed(raw, n, header_length)
        except EraserError as exc:
            self._emit(f"error:{exc.code}")
            raise
        return to_log_probs(scores, self._cfg.output_kind), datatype

    async def predict_many(
        self,
        x: np.ndarray,
        batch_size: int = 256,
        concurrency: int = 8,
        progress: ProgressHook | None = None,
    ) -> np.ndarray:
        """``predict`` over a large array in batches, ``concurrency`` in flight, rows in order.

        ``progress`` is called with the number of instances each finished batch held (an
        increment, so ``tqdm.update`` plugs in directly). The first failing batch cancels the
        rest and its error is raised as is.
        """
        if batch_size < 1 or concurrency < 1:
            raise ValueError(f"batch_size {batch_size} and concurrency {concurrency} must be >= 1")
        starts = range(0, len(x), batch_size)
        results: list[np.ndarray] = [np.empty(0)] * len(starts)
        pending = iter(enumerate(starts))

        async def worker() -> None:
            for i, start in pending:  # shared iterator: each batch goes to exactly one worker
                results[i] = await self.predict(x[start : start + batch_size])
                if progress is not None:
                    progress(len(results[i]))

        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(min(concurrency, len(starts))):
                    group.create_task(worker())
        except BaseExceptionGroup as failures:
            raise _first_leaf(failures) from None
        if not results:
            return np.empty((0, self.model.num_classes))
        return np.concatenate(results)

    # ---- internals -----------------------------------------------------------------------

    def _check_batch(self, x: np.ndarray) -> int:
        if x.ndim != len(self._input_shape) + 1 or x.shape[1:] != self._input_shape:
            raise InvalidInstances(
                f"instances have shape {list(x.shape)}; model {self.model.name} expects "
                f"[N, {', '.join(map(str, self._input_shape))}]"
            )
        return int(x.shape[0])

    async def _post_with_retries(
        self, body: _Request, sent: asyncio.Future[None] | None
    ) -> _Answer:
        try:
            return await self._post_once(body, sent)
        except UpstreamError as exc:
            if self._cfg.retries == 0 or not is_retryable(exc):
                raise
            first_failure = exc
        return await self._retry(body, first_failure)

    async def _retry(self, body: _Request, first_failure: UpstreamError) -> _Answer:
        """Attempts 2..retries+1 under tenacity; attempt 1 (already failed) is replayed so that
        tenacity's attempt count, backoff schedule and give-up all stay its own."""
        replay: UpstreamError | None = first_failure
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(self._cfg.retries + 1),
            wait=wait_random_exponential(multiplier=self._cfg.retry_backoff_s, max=_MAX_BACKOFF_S),
            retry=retry_if_exception(is_retryable),
            before_sleep=self._before_retry,
            reraise=True,
        ):
            with attempt:
                if replay is not None:
                    failure, replay = replay, None
                    raise failure
                return await self._post_once(body)
        raise AssertionError("tenacity neither returned nor re-raised")  # pragma: no cover

    def _before_retry(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.debug(
            "upstream of model %s: attempt %d failed (%s); retrying",
            self.model.name,
            state.attempt_number,
            error,
        )
        self._emit("retry")

    async def _post_once(self, body: _Request, sent: asyncio.Future[None] | None = None) -> _Answer:
        session = self._session
        if session is None:
            raise RuntimeError("UpstreamClient.start() was not called (or close() was)")
        headers = upstream_headers()  # the caller's X-Request-ID, traceparent
        if body.header_length is not None:  # binary tensor data after a JSON header
            headers[HEADER_LENGTH] = str(body.header_length)
            headers["Content-Type"] = "application/octet-stream"
        try:
            trace_ctx = {"sent": sent} if sent is not None else None
            async with session.post(
                self._url,
                data=body.content,
                headers=headers or None,
                allow_redirects=False,
                trace_request_ctx=trace_ctx,
            ) as response:
                payload = await response.read()
                status = response.status
                header_length = response.headers.get(HEADER_LENGTH)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise self._translate(exc) from exc
        if not 200 <= status < 300:
            snippet = payload[:_STATUS_BODY_CHARS].decode("utf-8", "replace").strip()
            raise UpstreamStatus(
                f"upstream returned HTTP {status}: {snippet}", upstream_status=status
            )
        return payload, header_length

    def _translate(self, exc: BaseException) -> UpstreamError:
        """What the upstream did, in words, from an aiohttp/asyncio exception."""
        cfg, url = self._cfg, self._shown_url
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            return UpstreamTimeout(
                f"upstream {url} did not accept a connection within {cfg.connect_timeout_s} s "
                f"(or all {cfg.max_connections} pooled connections stayed busy)"
            )
        if isinstance(exc, aiohttp.SocketTimeoutError):
            return UpstreamTimeout(f"upstream did not answer within {cfg.read_timeout_s} s")
        if isinstance(exc, TimeoutError):
            total = cfg.connect_timeout_s + cfg.read_timeout_s
            return UpstreamTimeout(f"upstream did not answer within {total} s")
        if isinstance(exc, aiohttp.ClientConnectorError):
            return UpstreamUnavailable(f"cannot connect to upstream {url}: {_os_reason(exc)}")
        if isinstance(exc, aiohttp.ServerDisconnectedError):
            return UpstreamUnavailable(
                f"cannot connect to upstream {url}: it closed the connection without answering"
            )
        if isinstance(exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError | OSError):
            return UpstreamUnavailable(
                f"cannot connect to upstream {url}: connection broke ({exc or type(exc).__name__})"
            )
        return UpstreamBadResponse(f"upstream answer could not be read: {exc}")

    def _breaker_opened(self, failures: int, trial_in_s: float) -> None:
        log.warning(
            "circuit for upstream of model %s opened after %d consecutive failures; "
            "trial call in %.2f s",
            self.model.name,
            failures,
            trial_in_s,
        )
        self._emit("breaker_open")

    def _emit(self, event: str) -> None:
        hook = self.on_event
        if hook is None:
            return
        try:
            hook(event)
        except Exception:
            log.exception("upstream on_event hook failed for %r", event)


def _request_sent_trace() -> aiohttp.TraceConfig:
    """Resolve a request's ``sent`` future once its body is on the socket.

    aiohttp announces a body chunk just *before* writing it, from code that then writes it
    without yielding; a callback scheduled with ``call_soon`` therefore runs after the write.
    """

    async def on_chunk_sent(
        _session: aiohttp.ClientSession, ctx: Any, _params: aiohttp.TraceRequestChunkSentParams
    ) -> None:
        sent = (ctx.trace_request_ctx or {}).get("sent")
        if sent is not None and not sent.done():
            asyncio.get_running_loop().call_soon(_resolve, sent)

    trace = aiohttp.TraceConfig()
    trace.on_request_chunk_sent.append(on_chunk_sent)
    return trace


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _checked_url(raw: str) -> URL:
    """Fail at start-up, not on the first request, for a URL aiohttp cannot post to."""
    url = URL(raw)
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"upstream url must be http(s)://host/...: {_display_url(url)}")
    return url


def _display_url(url: URL) -> str:
    """The URL without credentials or query (either may hold secrets) for messages and logs."""
    port = f":{url.explicit_port}" if url.explicit_port else ""
    return f"{url.scheme}://{url.host}{port}{url.path}"


def _os_reason(exc: aiohttp.ClientConnectorError) -> str:
    """``Connection refused`` rather than asyncio's ``Connect call failed ('127.0.0.1', 9)``."""
    err = exc.os_error
    if err.errno:
        return os.strerror(err.errno)
    return str(err) or type(err).__name__


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first
