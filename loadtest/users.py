"""Locust users: one per echo server, and one for the unsync worker's job API.

The echo users keep one connection each and verify every echoed byte (see
:mod:`loadtest.tcp_client`); each payload carries a sequence number so a stale
or reordered echo cannot pass for the right one. The worker user posts jobs
across the worker's execution modes and checks every response body.

Targets and rates come from :mod:`loadtest.options` (flags or ``LOADTEST_*``),
read when a user starts, so a value the master sends to its workers applies.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import random
import struct
from collections.abc import Callable, Iterator
from typing import ClassVar

from locust import FastHttpUser, User, constant_throughput, task
from locust.env import Environment
from locust.exception import StopUser

from loadtest import options as lt_options
from loadtest.tcp_client import EchoClient
from loadtest.worker_jobs import PlannedJob, check_job_response, plan
from services.common.logs import log_event

logger = logging.getLogger("loadtest.users")

# The sequence number stamped into each payload: 8 bytes, big-endian.
SEQ = struct.Struct("!Q")


def _pacer(rate: float) -> Callable[[User], float]:
    """Locust wait-time function for ``rate`` task runs per second (0: no wait)."""
    if rate > 0:
        return constant_throughput(rate)
    return lambda _user: 0.0


class EchoUser(User):
    """A user that round-trips a fixed-size payload through one echo server, forever.

    Payload size, rate and timeout come from the ``--echo-*`` options; the
    target from the option named by :attr:`target_option`.
    """

    abstract = True
    target_option: ClassVar[str]  # attribute of LoadtestOptions holding (host, port)
    request_name: ClassVar[str]  # the name Locust reports the round trips under

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        opts = lt_options.read(environment.parsed_options)
        host, port = getattr(opts, self.target_option)
        self.client = EchoClient(
            host,
            port,
            environment.events.request,
            name=self.request_name,
            timeout_s=opts.echo_timeout_s,
        )
        # Random content: a server that echoes zeros or a constant cannot pass.
        self._payload = bytearray(os.urandom(opts.echo_payload_bytes))
        self._seq = itertools.count(random.getrandbits(32))
        self._stamp = len(self._payload) >= SEQ.size
        self._pace = _pacer(opts.echo_rate)

    def wait_time(self) -> float:
        return self._pace(self)

    @task
    def echo(self) -> None:
        if self._stamp:
            SEQ.pack_into(self._payload, 0, next(self._seq))
        self.client.echo(self._payload)

    def on_stop(self) -> None:
        self.client.close()


class TrioEchoUser(EchoUser):
    """Round trips through the trio echo server (``--trio-echo``)."""

    target_option = "trio_echo"
    request_name = "trio-echo"


class UvloopEchoUser(EchoUser):
    """Round trips through the asyncio/uvloop echo server (``--uvloop-echo``)."""

    target_option = "uvloop_echo"
    request_name = "uvloop-echo"


class WorkerUser(FastHttpUser):
    """Posts jobs to the unsync worker, spread over tasks (weighted) and modes.

    The base URL is ``--worker-url`` unless Locust's own ``--host`` is given.
    Its first task run reads ``GET /tasks`` and plans the mix (see
    :func:`loadtest.worker_jobs.plan`). Each request is named
    ``jobs:<task>:<mode>``, so the gate and the report show every combination;
    a response counts as a success only if its status is 200 and its body
    names the task and mode and carries the right result.
    """

    # Relative to each echo user's weight of 1: jobs are costlier than echoes, so
    # with equal weights a third of the users post jobs at a lower rate.
    weight = 1

    def __init__(self, environment: Environment) -> None:
        opts = lt_options.read(environment.parsed_options)
        self.host = environment.host or opts.worker_url
        self.network_timeout = self.connection_timeout = opts.worker_timeout_s
        super().__init__(environment)
        self._opts = opts
        self._pace = _pacer(opts.worker_rate)
        self._jobs: Iterator[PlannedJob] = iter(())
        self._planned = False
        # The job's own limit stays below the HTTP one, so a slow job comes back
        # as the worker's timeout answer rather than a dropped connection.
        self._job_timeout_s = round(opts.worker_timeout_s * 0.8, 3)

    def wait_time(self) -> float:
        return self._pace(self)

    def _load_plan(self) -> None:
        """Read ``GET /tasks`` and plan the weighted job mix.

        A failed or malformed answer is reported as a failed ``tasks`` request
        and retried on the next task run; a worker that offers none of the
        wanted modes stops the user (a configuration error, not load).
        """
        with self.client.get("/tasks", name="tasks", catch_response=True) as response:
            try:
                jobs = plan(json.loads(response.text or ""), self._opts.worker_modes)
            except ValueError as exc:
                response.failure(f"GET /tasks: {exc}")
                return
        if not jobs:
            log_event(logger, "no_jobs_to_run", logging.ERROR, modes=self._opts.worker_modes)
            raise StopUser()
        random.shuffle(jobs)
        self._jobs = itertools.cycle(jobs)
        self._planned = True

    @task
    def job(self) -> None:
        if not self._planned:
            self._load_plan()
            return
        job = next(self._jobs)
        body = job.kind.request(job.mode, self._job_timeout_s)
        with self.client.post("/jobs", json=body, name=job.name, catch_response=True) as response:
            problem = check_job_response(job, response.status_code, response.text)
            if problem:
                response.failure(problem)
