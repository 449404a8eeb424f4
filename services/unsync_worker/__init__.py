"""The unsync worker: an HTTP job service where unsync decides thread, event loop or process.

``python -m services.unsync_worker --host H --port P`` serves the API;
``python -m services.unsync_worker.experiments`` measures the modes against it.

This package's ``__init__`` stays import-free on purpose: process-pool workers
import :mod:`services.unsync_worker.tasks` (and so this package) to find the
functions they run, and they should not pay for FastAPI or uvicorn.
"""
