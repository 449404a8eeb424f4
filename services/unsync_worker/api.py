"""The HTTP API (FastAPI): /healthz, /tasks, /jobs, /metrics.

POST /jobs reads and validates its body by hand rather than through a FastAPI
body parameter, so that each kind of bad input gets its own status and a
message naming the problem (413 oversized, 415 not JSON, 400 malformed JSON,
422 unknown task/field, wrong type, out of range), the body size is bounded
while it streams in, and test-only tasks can be accepted without appearing in
the OpenAPI schema. The schema is still complete: it is generated from the
same pydantic models the handler validates with.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Mapping
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.unsync_worker.jobs import JobService, Outcome, Rejected, error
from services.unsync_worker.metrics import WorkerMetrics
from services.unsync_worker.settings import ENV_PREFIX, WorkerSettings
from services.unsync_worker.tasks import JobContext, TaskSpec

logger = logging.getLogger("unsync_worker.api")


class JobRequest(BaseModel):
    """The envelope of POST /jobs; ``args`` is checked against the task's own model."""

    model_config = ConfigDict(extra="forbid", strict=True)

    task: str = Field(min_length=1, max_length=64)
    args: dict[str, Any] = Field(default_factory=dict)
    mode: Literal["auto", "async", "thread", "process", "sync"] = "auto"
    timeout_s: float | None = Field(default=None, gt=0)


class JobResult(BaseModel):
    id: int = Field(description="job number, unique per worker process")
    task: str
    mode: str = Field(description="the mode the job ran in (auto resolved)")
    result: Any = Field(description="the task's result")
    pid: int = Field(description="process that ran the job")
    thread: str = Field(description="thread that ran the job")
    queued_ms: float = Field(description="from acceptance to the start of the run")
    run_ms: float = Field(description="the run itself")


class Problem(BaseModel):
    field: str
    problem: str


class ErrorBody(BaseModel):
    error: str = Field(description="a stable code, e.g. unknown_task, queue_full, timeout")
    detail: str = Field(description="what was wrong, for a human")
    problems: list[Problem] | None = None


class TaskInfo(BaseModel):
    name: str
    kind: Literal["cpu", "io"]
    description: str
    modes: list[str]
    auto_mode: str = Field(description="the mode auto picks: how the task is written")
    args_schema: dict[str, Any]


class TaskList(BaseModel):
    tasks: list[TaskInfo]


class Health(BaseModel):
    status: Literal["ok", "draining"]
    pid: int
    threads: int
    processes: int
    concurrency: int
    queue_size: int


class BadRequest(Exception):
    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.body["detail"])
        self.outcome = outcome


def _field(loc: tuple[int | str, ...], prefix: str) -> str:
    path = ".".join(str(part) for part in loc)
    return f"{prefix}.{path}" if prefix and path else (prefix or path or "body")


def invalid(errors: list[ErrorDetails], prefix: str = "") -> Outcome:
    """A 422 naming every field pydantic rejected, in words a client can act on."""
    problems = []
    for err in errors:
        if err["type"] == "extra_forbidden":
            text = "unknown field"
        elif err["type"] == "missing":
            text = "required field is missing"
        else:
            text = err["msg"]
        problems.append({"field": _field(err["loc"], prefix), "problem": text})
    detail = "; ".join(f"{p['field']}: {p['problem']}" for p in problems)
    outcome = error(422, "invalid_request", detail)
    outcome.body["problems"] = problems
    return outcome


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than ``limit`` bytes whether declared or streamed."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise BadRequest(
                error(400, "bad_content_length", "Content-Length is not a number")
            ) from None
        if size > limit:
            raise BadRequest(
                error(413, "body_too_large", f"body of {size} bytes exceeds the {limit}-byte limit")
            )
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BadRequest(error(413, "body_too_large", f"body exceeds the {limit}-byte limit"))
    return bytes(body)


def parse_json(body: bytes) -> dict[str, Any]:
    """Decode a JSON object; 400 for malformed JSON, 422 for JSON that is not an object."""
    try:
        data = json.loads(body, parse_constant=_reject_constant)
    except RecursionError:
        raise BadRequest(error(400, "invalid_json", "body is nested too deeply")) from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, NaN/Infinity
        raise BadRequest(error(400, "invalid_json", f"body is not valid JSON: {exc}")) from None
    if not isinstance(data, dict):
        raise BadRequest(
            error(422, "invalid_request", f"body must be a JSON object, not {type(data).__name__}")
        )
    return data


def job_schema(spec: TaskSpec, modes: list[str], max_timeout_s: float) -> dict[str, Any]:
    """The OpenAPI schema of a POST /jobs body for one task (one branch of the oneOf)."""
    args_schema = spec.args_model.model_json_schema()
    args_schema.pop("title", None)
    return {
        "type": "object",
        "title": f"{spec.name} job",
        "properties": {
            "task": {"type": "string", "enum": [spec.name]},
            "args": args_schema,
            "mode": {"type": "string", "enum": modes, "default": "auto"},
            "timeout_s": {
                "anyOf": [
                    {"type": "number", "exclusiveMinimum": 0, "maximum": max_timeout_s},
                    {"type": "null"},
                ],
                "description": "seconds from acceptance to result; default from settings",
            },
        },
        # args may be left out only when the task needs none of them
        "required": ["task", "args"] if args_schema.get("required") else ["task"],
        "additionalProperties": False,
    }


def _error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        400: "malformed JSON or Content-Length",
        413: "body larger than the limit",
        415: "body is not application/json",
        422: "unknown task, unknown field, wrong type, out-of-range value, mode not offered",
        500: "the task raised an unexpected error (logged)",
        502: "an echo service was unreachable or did not echo",
        503: "queue full, too many sync jobs, shutting down, or process pool rebuilt: "
        "retry after Retry-After",
        504: "the job passed its timeout",
    }
    return {
        status: {"model": ErrorBody, "description": descriptions[status]} for status in statuses
    }


def create_app(
    *,
    service: JobService,
    tasks: Mapping[str, TaskSpec],
    public_tasks: Mapping[str, TaskSpec],
    context: JobContext,
    settings: WorkerSettings,
    metrics: WorkerMetrics,
) -> FastAPI:
    """Build the API around a started :class:`JobService`.

    ``tasks`` is what POST /jobs accepts; ``public_tasks`` (a subset) is what
    GET /tasks and the OpenAPI schema show. With ``settings.sync_max_jobs`` 0,
    sync mode is neither listed nor accepted (422).
    """
    sync_enabled = settings.sync_max_jobs > 0

    def offered(spec: TaskSpec) -> list[str]:
        """The modes a task is offered in on this worker ("auto" first)."""
        return [m for m in spec.modes if m != "sync" or sync_enabled]

    app = FastAPI(
        title="unsync worker",
        version="1.0.0",
        description="Runs catalogue tasks where unsync decides: event loop, thread or process.",
    )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(
            {"error": code, "detail": str(exc.detail)},
            status_code=exc.status_code,
            headers=exc.headers,
        )

    @app.exception_handler(Exception)
    async def internal_error(_request: Request, exc: Exception) -> Response:
        logger.error("event=request_exception", exc_info=exc)
        return JSONResponse(
            {"error": "internal_error", "detail": type(exc).__name__}, status_code=500
        )

    @app.get(
        "/healthz",
        response_model=Health,
        responses={503: {"model": Health, "description": "draining: shutting down"}},
    )
    async def healthz() -> Response:
        health = Health(
            status="ok" if service.accepting else "draining",
            pid=os.getpid(),
            threads=settings.threads,
            processes=settings.processes,
            concurrency=settings.concurrency,
            queue_size=settings.queue_size,
        )
        return JSONResponse(health.model_dump(), status_code=200 if service.accepting else 503)

    task_list = TaskList(
        tasks=[
            TaskInfo(
                name=spec.name,
                kind=spec.kind,
                description=spec.description,
                modes=offered(spec),
                auto_mode=spec.written,
                args_schema=spec.args_model.model_json_schema(),
            )
            for spec in public_tasks.values()
        ]
    )

    @app.get("/tasks", response_model=TaskList)
    async def list_tasks() -> TaskList:
        return task_list

    @app.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    async def prometheus_metrics() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    request_schema = {
        "oneOf": [
            job_schema(spec, offered(spec), settings.max_timeout_s)
            for spec in public_tasks.values()
        ]
    }

    @app.post(
        "/jobs",
        response_model=None,
        responses={
            200: {"model": JobResult, "description": "the job ran; where and how long"},
            **_error_responses(400, 413, 415, 422, 500, 502, 503, 504),
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": request_schema,
                        "example": {"task": "primes", "args": {"n": 10000}, "mode": "auto"},
                    }
                },
            }
        },
    )
    async def post_job(request: Request) -> Response:
        try:
            outcome = await _handle_job(request)
        except BadRequest as exc:
            outcome = exc.outcome
            metrics.rejected_requests.labels(outcome.body["error"]).inc()
        return JSONResponse(outcome.body, status_code=outcome.status, headers=outcome.headers)

    async def _handle_job(request: Request) -> Outcome:
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != "application/json":
            raise BadRequest(
                error(
                    415,
                    "unsupported_media_type",
                    f"send Content-Type: application/json, not {media_type or 'nothing'}",
                )
            )
        data = parse_json(await read_body(request, settings.max_body_bytes))
        try:
            envelope = JobRequest.model_validate(data)
        except ValidationError as exc:
            raise BadRequest(invalid(exc.errors())) from None
        spec = tasks.get(envelope.task)
        if spec is None:
            known = ", ".join(public_tasks)
            raise BadRequest(
                error(422, "unknown_task", f"unknown task {envelope.task!r}; known: {known}")
            )
        mode = spec.written if envelope.mode == "auto" else envelope.mode
        if mode == "sync" and not sync_enabled and mode in spec.runners:
            raise BadRequest(
                error(
                    422,
                    "mode_not_allowed",
                    "sync mode is turned off on this worker "
                    f"(--sync-max-jobs / {ENV_PREFIX}SYNC_MAX_JOBS is 0)",
                )
            )
        if mode not in spec.runners:
            allowed = ", ".join(offered(spec))
            raise BadRequest(
                error(
                    422,
                    "mode_not_allowed",
                    f"task {spec.name!r} does not run in {mode} mode; allowed: {allowed}",
                )
            )
        try:
            args = spec.args_model.model_validate(envelope.args)
        except ValidationError as exc:
            raise BadRequest(invalid(exc.errors(), prefix="args")) from None
        timeout_s = envelope.timeout_s or settings.default_timeout_s
        if timeout_s > settings.max_timeout_s:
            raise BadRequest(
                error(
                    422,
                    "invalid_request",
                    f"timeout_s: {timeout_s} exceeds the maximum {settings.max_timeout_s}",
                )
            )
        try:
            job = service.submit(spec, mode, spec.kwargs(args, context), timeout_s)
        except Rejected as exc:
            return exc.outcome
        # shield: a client that goes away cancels this handler, never the job's future.
        return await asyncio.shield(job.done)

    return app
