"""An OpenAI-compatible HTTP API for personalized generation, with per-user preference profiles.

Apps keep the official ``openai`` client and change only the base URL. PAD's own knobs travel in the body
(``extra_body`` in the client): ``preference`` (text, or a list of ``{"dimension": catalog name, "weight"}``
and ``{"text": free-text preference, "weight"}`` items), ``alignment_weight``, ``top_k``, ``method`` and
``diagnostics`` (``true`` adds ``tokens``: each generated token with its base log-prob, reward, score and the
alternatives it beat, the last one with ``eos: true`` when the answer stopped; in a stream, on the chunk that
carries ``finish_reason``). The ``user`` field selects a
stored profile; an explicit ``preference`` overrides it. ``/`` serves the playground page.
"""

from __future__ import annotations

import asyncio
import copy
import hmac
import json
import math
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, StrictBool, StrictInt, model_validator

from padkit.decoding.config import DEFAULT_WEIGHT, ConfigError, PADConfig
from padkit.decoding.pad import PAD, Generation
from padkit.errors import PadkitError
from padkit.preferences import CATALOG, Preference, render_input
from padkit.preferences.render import Prompt
from padkit.serving.batcher import Batcher, Job, QueueFull
from padkit.serving.metrics import RequestCounter, ServerMetrics, log_request
from padkit.serving.profiles import ProfileStore

STATIC = Path(__file__).parent / "static"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
"""Loopback names: a server without keys may bind only these, and ``padkit bench serve`` loads only these."""


class DimensionWeight(BaseModel):
    """One weighted part of a preference: a catalog ``dimension``, or free ``text``."""

    model_config = ConfigDict(extra="forbid")

    dimension: str | None = None
    text: str | None = None
    weight: float = 1.0

    @model_validator(mode="after")
    def _one_kind(self) -> DimensionWeight:
        if (self.dimension is None) == (self.text is None):
            raise ValueError("each preference item needs exactly one of 'dimension' (catalog name) or 'text'")
        return self


PreferenceField = str | list[DimensionWeight] | None


UNSUPPORTED = (
    "logprobs",
    "top_logprobs",
    "tools",
    "tool_choice",
    "functions",
    "function_call",
    "parallel_tool_calls",
    "response_format",
    "logit_bias",
    "presence_penalty",
    "frequency_penalty",
    "audio",
    "modalities",
    "prediction",
    "best_of",
    "echo",
    "suffix",
)
"""OpenAI request fields padkit does not implement: refused with a 400 naming them when set (a null, false or 0
value asks for nothing and passes), never silently ignored."""
MAX_USER_CHARS = 256


class _PadFields(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    max_tokens: StrictInt | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: StrictInt = 1
    seed: StrictInt | None = None
    stop: str | list[str] | None = None
    stream: StrictBool = False
    stream_options: dict[str, Any] | None = None
    user: str | None = None
    preference: PreferenceField = None
    alignment_weight: float | None = None
    top_k: StrictInt | None = None
    method: str | None = None
    diagnostics: StrictBool = False

    @model_validator(mode="before")
    @classmethod
    def _refuse_unsupported(cls, data: Any) -> Any:
        if isinstance(data, dict):
            asked = [k for k in UNSUPPORTED if data.get(k) not in (None, False, 0)]
            if asked:
                raise APIError(400, f"padkit does not implement {', '.join(asked)}", asked[0], "unsupported_field")
        return data


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(_PadFields):
    messages: list[ChatMessage]
    max_completion_tokens: StrictInt | None = None


class CompletionRequest(_PadFields):
    prompt: str | list[str]


class ProfileBody(BaseModel):
    preference: str | list[DimensionWeight]
    alignment_weight: float | None = None


class APIError(Exception):
    """An OpenAI-style error: ``{"error": {"message", "type", "param", "code"}}`` with an HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers

    def body(self) -> dict:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def to_preference(value: PreferenceField) -> Preference | None:
    """The HTTP preference as a :class:`Preference`; structured dimensions must be catalog names."""
    if value is None:
        return None
    if isinstance(value, str):
        return Preference.parse(value)
    unknown = [d.dimension for d in value if d.dimension is not None and d.dimension.strip().lower() not in CATALOG]
    if unknown:
        raise APIError(
            400,
            f"unknown dimension(s) {', '.join(map(repr, unknown))}; known: {', '.join(CATALOG)}. "
            "Free-text preferences go in a 'text' item or a 'preference' string.",
            "preference",
            "unknown_dimension",
        )
    return Preference.parse([{"dimension": d.dimension or d.text, "weight": d.weight} for d in value])


API_NAMES = {"weight": "alignment_weight", "max_new_tokens": "max_tokens"}
"""Request fields named differently from their :class:`PADConfig` setting (OpenAI's names, or padkit's)."""


def request_config(**values: Any) -> PADConfig:
    """The :class:`PADConfig` of one request; a bad value is a 400 naming the request field."""
    try:
        return PADConfig(**values)
    except ConfigError as err:
        name = API_NAMES.get(err.field, err.field)
        message = str(err).replace(err.field, name, 1) if name != err.field else str(err)
        raise APIError(400, message, name) from err


@dataclass(frozen=True)
class Caller:
    """The key a request came with: ``user`` for a user's key (its own profile only), None for the admin."""

    user: str | None

    @property
    def admin(self) -> bool:
        return self.user is None

    def may_use(self, user: str) -> None:
        """403 unless this caller may read and change ``user``'s profile."""
        if not self.admin and user != self.user:
            raise APIError(
                403, f"this key belongs to {self.user!r}; it cannot use the profile of {user!r}", "user", "forbidden"
            )


class Server:
    """The state behind the routes: the PAD model, the profile store and the batcher."""

    def __init__(
        self,
        pad: PAD,
        store: ProfileStore,
        default_weight: float = DEFAULT_WEIGHT,
        max_tokens_limit: int = 1024,
        window_s: float = 0.02,
        max_batch: int = 16,
        max_body_bytes: int = 1 << 20,
        api_key: str | None = None,
        max_queue: int | None = 256,
        request_timeout_s: float | None = 600.0,
        log_prompts: bool = False,
        continuous: bool = True,
    ) -> None:
        self.pad, self.store = pad, store
        self.api_key = api_key or None
        self.request_timeout_s = request_timeout_s
        self.log_prompts = log_prompts
        self.draining = False
        """Set by SIGTERM: new ``/v1`` requests get 503 while the accepted ones finish."""
        self.in_flight = 0
        self.max_body_bytes = max_body_bytes
        self.default_weight = default_weight
        self.max_tokens_limit = max_tokens_limit
        self.metrics = ServerMetrics(lambda: self.batcher.waiting)
        self.batcher = Batcher(pad, window_s, max_batch, max_queue, self.metrics.batch_size.observe, continuous)
        self.model_id = pad.base_name
        # The batcher's thread encodes with padding, which a fast tokenizer holds as state on its Rust object;
        # counting tokens with that same object from this thread races with it (a padded batch came back unpadded).
        self.tokenizer = copy.deepcopy(pad.tokenizer)
        self.rm_tokenizer = self.tokenizer if pad.rm_tokenizer is pad.tokenizer else copy.deepcopy(pad.rm_tokenizer)

    def caller(self, request: Request) -> Caller:
        """Who is asking, from ``Authorization: Bearer KEY``: the admin (the ``--api-key``), a key's user, or 401.

        Without an admin key and with no user key stored the server is open (and binds to 127.0.0.1 unless told
        ``--insecure``): everyone is admin."""
        if self.api_key is None and not self.store.has_keys():
            return Caller(None)
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise APIError(
                401, "this server needs an API key: send 'Authorization: Bearer KEY'", None, "missing_api_key"
            )
        if self.api_key is not None and hmac.compare_digest(key.encode(), self.api_key.encode()):
            return Caller(None)
        user = self.store.key_user(key)
        if user is None:
            raise APIError(401, "the API key is not valid (unknown or revoked)", None, "invalid_api_key")
        return Caller(user)

    def job(
        self, body: _PadFields, prompt: Prompt, max_tokens: int | None, caller: Caller | None = None
    ) -> tuple[Job, int]:
        """Validate one request and turn it into a batcher job; returns it with the prompt's token count.

        A user key's requests are personalized with that user's own profile, whatever ``user`` they send."""
        if caller is not None and caller.user is not None:
            body = body.model_copy(update={"user": caller.user})
        if body.n != 1:
            raise APIError(400, "only n=1 is supported", "n")
        if body.user is not None and not 0 < len(body.user) <= MAX_USER_CHARS:
            raise APIError(400, f"user must be 1 to {MAX_USER_CHARS} characters", "user")
        stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        if len(stops) > 4:
            raise APIError(400, "stop takes up to 4 strings", "stop")
        limit = min(128, self.max_tokens_limit) if max_tokens is None else max_tokens
        if not 1 <= limit <= self.max_tokens_limit:
            raise APIError(400, f"max_tokens must be between 1 and {self.max_tokens_limit}, got {limit}", "max_tokens")
        profile = None
        if body.user is not None:
            profile = self.store.get(body.user)
            if profile is None and body.preference is None and (caller is None or caller.user is None):
                raise APIError(
                    404,
                    f"no profile for user {body.user!r}; create it with PUT /v1/profiles/{{user}}",
                    "user",
                    "profile_not_found",
                )
        try:
            preference = to_preference(body.preference)
            if preference is None and profile is not None:
                preference = to_preference(_profile_field(profile.preference))
        except PadkitError as err:
            raise APIError(400, str(err), "preference") from err
        stored_weight = profile.alignment_weight if profile is not None else None
        weight = next((w for w in (body.alignment_weight, stored_weight) if w is not None), self.default_weight)
        method = body.method or "pad"
        temperature = 1.0 if body.temperature is None else body.temperature
        if method == "base":
            preference = None
            if temperature == 0:
                method = "pad"  # greedy PAD on a row without preference is greedy base: it joins PAD batches
        config = request_config(
            method=method,
            weight=weight,
            top_k=body.top_k if body.top_k is not None else PADConfig.default("top_k"),
            temperature=temperature,
            top_p=1.0 if body.top_p is None else body.top_p,
            seed=body.seed,
            stop=tuple(stops) or None,
            max_new_tokens=limit,
            diagnostics=body.diagnostics,
        )
        n_prompt = self.prompt_tokens(prompt)
        self._check_context(n_prompt, limit, "the prompt", "messages")
        if config.method in ("pad", "best-of-n", "args") and preference is not None:
            for dim in preference.dimensions:  # the PersRM reads each dimension's principle with the prompt
                n_rm = self.prompt_tokens(prompt, dim.principle, self.rm_tokenizer)
                self._check_context(n_rm, limit, f"the prompt with the preference {dim.text[:40]!r}", "preference")
        return Job(prompt, preference, config, asyncio.get_running_loop()), n_prompt

    def _check_context(self, n_tokens: int, limit: int, what: str, param: str) -> None:
        """A row that would not fit the context is refused here, before it can join (and fail) a batch."""
        context = getattr(self.pad.base_model.config, "max_position_embeddings", None)
        if context is not None and n_tokens + limit > context:
            raise APIError(
                400,
                f"{what} is {n_tokens} tokens; with max_tokens={limit} it exceeds the context of {context} tokens",
                param,
                "context_length_exceeded",
            )

    def prompt_tokens(self, prompt: Prompt, principle: str | None = None, tokenizer=None) -> int:
        """Tokens of ``prompt`` as a model reads it (the base's, or with ``principle`` the PersRM's input)."""
        tokenizer = tokenizer or self.tokenizer
        try:
            text = render_input(tokenizer, prompt, principle)
        except ValueError as err:
            raise APIError(400, str(err), "messages") from err
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _profile_field(stored: str | list[dict]) -> PreferenceField:
    return stored if isinstance(stored, str) else [DimensionWeight(**d) for d in stored]


def _chat_prompt(messages: list[ChatMessage]) -> Prompt:
    turns = []
    for m in messages:
        content = m.content
        if isinstance(content, list):
            content = "".join(part.get("text", "") for part in content if part.get("type") == "text")
        turns.append({"role": m.role, "content": content or ""})
    if not turns or turns[-1]["role"] != "user" or not turns[-1]["content"].strip():
        raise APIError(400, "messages must end with a non-empty user message", "messages")
    return turns


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _diagnostics(job: Job, gen: Generation) -> dict:
    """The ``tokens`` extension: per generated token, its base log-prob, reward, score and the alternatives."""
    if not job.diagnostics or gen.tokens is None:
        return {}

    def entry(t) -> dict:
        return {
            "token_id": t.token_id,
            "text": t.text,
            "base_logprob": _finite_or_none(t.base_logprob),
            "reward": _finite_or_none(t.reward),
            "score": _finite_or_none(t.score),
        }

    return {
        "tokens": [
            {**entry(t), "eos": i >= len(gen.token_ids), "alternatives": [entry(a) for a in t.alternatives]}
            for i, t in enumerate(gen.tokens)
        ]
    }


def _usage(n_prompt: int, gen: Generation) -> dict:
    n = len(gen.token_ids)
    return {"prompt_tokens": n_prompt, "completion_tokens": n, "total_tokens": n_prompt + n}


class _BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes gets 413 before the app reads it (by its
    Content-Length), or as soon as it grows past the limit (a body sent without one)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = APIError(413, f"the request body is over {self.limit} bytes", None, "body_too_large")
        length = dict(scope.get("headers", ())).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await too_large.response()(scope, receive, send)
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _BodyTooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _BodyTooLarge:
            await too_large.response()(scope, receive, send)


class Draining:
    """ASGI middleware: count the ``/v1`` requests in flight, and refuse new ones with 503 once draining."""

    def __init__(self, app: Any, server: Server) -> None:
        self.app, self.server = app, server

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            return await self.app(scope, receive, send)
        if self.server.draining:
            refused = APIError(503, "the server is shutting down", None, "shutting_down", {"Retry-After": "5"})
            return await refused.response()(scope, receive, send)
        self.server.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.server.in_flight -= 1


class DrainingServer(uvicorn.Server):
    """uvicorn, with a graceful SIGTERM: stop taking requests (503), let the accepted ones finish within
    ``grace_s`` seconds, shut down (batcher, database), exit 0. A second signal stops at once."""

    def __init__(self, config: uvicorn.Config, server: Server, grace_s: float) -> None:
        super().__init__(config)
        self.server, self.grace_s = server, grace_s

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self.server.draining:
            self.should_exit = True
            return
        self.server.draining = True
        threading.Thread(target=self._drain, name="padkit-drain", daemon=True).start()

    def _drain(self) -> None:
        deadline = time.monotonic() + self.grace_s
        while self.server.in_flight > 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.should_exit = True


def serve(server: Server, host: str = "127.0.0.1", port: int = 8000, grace_s: float = 30.0) -> None:
    """Run ``server`` over HTTP until SIGTERM or SIGINT, then drain it (see :class:`DrainingServer`)."""
    config = uvicorn.Config(create_app(server), host=host, port=port, log_level="info", timeout_graceful_shutdown=5)
    DrainingServer(config, server, grace_s).run()


def create_app(server: Server) -> FastAPI:
    """The FastAPI app: OpenAI-compatible completions, models, health, and the profile API."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        server.batcher.close()
        server.store.close()

    app = FastAPI(title="padkit", description=__doc__, lifespan=lifespan)
    app.state.server = server
    app.add_middleware(BodyLimit, limit=server.max_body_bytes)
    app.add_middleware(Draining, server=server)
    app.add_middleware(RequestCounter, metrics=server.metrics)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def playground() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    caller = Depends(server.caller)

    @app.get("/v1/dimensions", dependencies=[caller])
    async def dimensions() -> dict:
        """The catalog dimensions with their opposites, for clients that build preference controls."""
        return {"data": [asdict(d) for d in CATALOG.values()]}

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return APIError(400, "the request body is not valid JSON", None, "invalid_json").response()
        # of a union's failed alternatives, the deepest says most (a bad list item, not "not a string")
        first = max(errors, key=lambda e: len(e.get("loc", ())), default={})
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body" and "[" not in str(p))
        return APIError(400, f"{where or 'body'}: {first.get('msg', 'invalid request')}", where or None).response()

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        """Prometheus text format (open, like /health: counts and timings, no user data)."""
        return Response(server.metrics.exposition(), media_type=server.metrics.content_type)

    @app.get("/health")
    async def health() -> dict:
        """Liveness, the models served and the strength a request without one gets (the playground's start)."""
        return {
            "status": "ok",
            "model": server.model_id,
            "rm": server.pad.rm_name,
            "default_weight": server.default_weight,
        }

    @app.get("/v1/models", dependencies=[caller])
    async def models() -> dict:
        return {
            "object": "list",
            "data": [{"id": server.model_id, "object": "model", "created": 0, "owned_by": "padkit"}],
        }

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request, who: Caller = caller):
        prompt = _chat_prompt(body.messages)
        limit = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
        job, n_prompt = server.job(body, prompt, limit, who)
        return await _respond(server, request, body, job, n_prompt, "chat")

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request, who: Caller = caller):
        prompt = body.prompt if isinstance(body.prompt, str) else (body.prompt[0] if len(body.prompt) == 1 else None)
        if prompt is None or not prompt.strip():
            raise APIError(400, "prompt must be one non-empty string", "prompt")
        job, n_prompt = server.job(body, prompt, body.max_tokens, who)
        return await _respond(server, request, body, job, n_prompt, "text")

    @app.put("/v1/profiles/{user}")
    async def put_profile(user: str, body: ProfileBody, who: Caller = caller) -> dict:
        who.may_use(user)
        if body.alignment_weight is not None:
            request_config(weight=body.alignment_weight)
        try:
            to_preference(body.preference)
        except PadkitError as err:
            raise APIError(400, str(err), "preference") from err
        stored = (
            body.preference
            if isinstance(body.preference, str)
            else [d.model_dump(exclude_none=True) for d in body.preference]
        )
        return server.store.put(user, stored, body.alignment_weight).as_dict()

    @app.get("/v1/profiles/{user}")
    async def get_profile(user: str, who: Caller = caller) -> dict:
        who.may_use(user)
        profile = server.store.get(user)
        if profile is None:
            raise APIError(404, f"no profile for user {user!r}", "user", "profile_not_found")
        return profile.as_dict()

    @app.delete("/v1/profiles/{user}")
    async def delete_profile(user: str, who: Caller = caller) -> dict:
        who.may_use(user)
        if not server.store.delete(user):
            raise APIError(404, f"no profile for user {user!r}", "user", "profile_not_found")
        return {"user": user, "deleted": True}

    return app


class _Clock:
    """One request's timings and outcome, for the metrics and its log line."""

    def __init__(self, server: Server, body: _PadFields, job: Job, rid: str) -> None:
        self.server, self.body, self.job, self.rid = server, body, job, rid
        self.start, self.first = time.monotonic(), None

    def first_text(self) -> None:
        if self.first is None:
            self.first = time.monotonic()
            self.server.metrics.first_token.observe(self.first - self.start)

    def end(self, status: int, gen: Generation | None = None, cancelled: bool = False) -> None:
        seconds = time.monotonic() - self.start
        metrics = self.server.metrics
        metrics.latency.observe(seconds)
        tokens = 0 if gen is None else len(gen.token_ids)
        metrics.tokens.inc(tokens)
        if cancelled:
            self.job.cancel()
            metrics.cancelled.inc()
        fields = dict(
            id=self.rid,
            user=self.body.user,
            method=self.job.config.method,
            stream=self.body.stream,
            tokens=tokens,
            latency_s=round(seconds, 3),
            status="cancelled" if cancelled else status,
        )
        if self.server.log_prompts:
            fields["prompt"] = self.job.prompt
        log_request(**fields)


async def _respond(
    server: Server, request: Request, body: _PadFields, job: Job, n_prompt: int, kind: Literal["chat", "text"]
):
    rid = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    try:
        server.batcher.submit(job)
    except QueueFull as err:
        raise APIError(
            429, f"the server is busy: {err}; retry shortly", None, "queue_full", {"Retry-After": "1"}
        ) from err
    clock = _Clock(server, body, job, rid)
    if not body.stream:
        try:
            gen = await _final(job, request, server.request_timeout_s)
        except APIError as err:
            clock.end(err.status, cancelled=err.status == 504)
            raise
        except asyncio.CancelledError:
            clock.end(499, cancelled=True)
            raise
        if gen is None:  # the client hung up: nobody to answer
            clock.end(499, cancelled=True)
            return Response(status_code=499)
        clock.first_text()
        clock.end(200, gen)
        choice = {"index": 0, "finish_reason": gen.finish_reason, "logprobs": None}
        if kind == "chat":
            choice["message"] = {"role": "assistant", "content": gen.text}
        else:
            choice["text"] = gen.text
        return {
            "id": rid,
            "object": "chat.completion" if kind == "chat" else "text_completion",
            "created": created,
            "model": server.model_id,
            "choices": [choice],
            "usage": _usage(n_prompt, gen),
            "preference": gen.preference,
            **_diagnostics(job, gen),
        }
    include_usage = bool((body.stream_options or {}).get("include_usage"))
    return StreamingResponse(
        _sse(server, job, n_prompt, kind, rid, created, include_usage, clock), media_type="text/event-stream"
    )


async def _next_event(job: Job, deadline: float | None) -> tuple[str, Any]:
    """The job's next event; ``("timeout", None)`` once ``deadline`` (monotonic) has passed."""
    if deadline is None:
        return await job.events.get()
    try:
        return await asyncio.wait_for(job.events.get(), max(0.0, deadline - time.monotonic()))
    except TimeoutError:
        return "timeout", None


def _timeout_error(timeout_s: float) -> APIError:
    return APIError(504, f"the answer took longer than the server's limit of {timeout_s:g} s", None, "timeout")


async def _final(job: Job, request: Request, timeout_s: float | None) -> Generation | None:
    """The finished answer; None when the client hung up first (then the job is cancelled)."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        step = None if deadline is None else deadline - time.monotonic()
        poll = 0.25 if step is None else min(0.25, max(step, 0.0))
        try:
            event, value = await asyncio.wait_for(job.events.get(), poll)
        except TimeoutError:
            if deadline is not None and time.monotonic() >= deadline:
                raise _timeout_error(timeout_s) from None
            if await request.is_disconnected():
                return None
            continue
        if event == "done":
            return value
        if event == "error":
            raise APIError(400 if isinstance(value, PadkitError) else 500, str(value))


async def _sse(
    server: Server,
    job: Job,
    n_prompt: int,
    kind: str,
    rid: str,
    created: int,
    include_usage: bool,
    clock: _Clock,
) -> AsyncIterator[str]:
    """The stream of chunks. If the client goes away (the generator is closed mid-stream) or the time limit
    passes, the job is cancelled: its row stops at the next decode step."""
    obj = "chat.completion.chunk" if kind == "chat" else "text_completion"

    def chunk(text: str | None, finish: str | None, first: bool = False, extra: dict | None = None) -> str:
        if kind == "chat":
            delta: dict = {"role": "assistant", "content": ""} if first else ({"content": text} if text else {})
            choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        else:
            choice = {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}
        payload = {"id": rid, "object": obj, "created": created, "model": server.model_id, "choices": [choice]}
        return f"data: {json.dumps({**payload, **(extra or {})})}\n\n"

    timeout_s = server.request_timeout_s
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    finished = False
    try:
        if kind == "chat":
            yield chunk(None, None, first=True)
        sent = ""
        while True:
            event, value = await _next_event(job, deadline)
            if event == "delta":
                clock.first_text()
                sent += value
                yield chunk(value, None)
            elif event in ("error", "timeout"):
                error = _timeout_error(timeout_s).body()["error"] if event == "timeout" else None
                error = error or {"message": str(value), "type": "server_error", "param": None, "code": None}
                finished = True
                clock.end(504 if event == "timeout" else 500, cancelled=event == "timeout")
                yield f"data: {json.dumps({'error': error})}\n\n"
                break
            else:
                if value.text.startswith(sent) and len(value.text) > len(sent):
                    clock.first_text()
                    yield chunk(value.text[len(sent) :], None)
                finished = True
                clock.end(200, value)
                yield chunk(None, value.finish_reason, extra=_diagnostics(job, value))
                if include_usage:
                    usage = {
                        "id": rid,
                        "object": obj,
                        "created": created,
                        "model": server.model_id,
                        "choices": [],
                        "usage": _usage(n_prompt, value),
                    }
                    yield f"data: {json.dumps(usage)}\n\n"
                break
        yield "data: [DONE]\n\n"
    finally:
        if not finished:  # the client hung up mid-stream
            clock.end(499, cancelled=True)
