"""Minimal echo servers the project's servers are measured against.

Each one is the smallest honest server of its kind, with no logging, limits or
timeouts: ``trio_tutorial`` (trio's tutorial shape without its per-message
prints), ``asyncio_protocol`` (a bare ``asyncio.Protocol``, on uvloop or the
stdlib loop), ``asyncio_streams`` (bare ``asyncio.start_server`` streams) and
``epoll_echo.c`` (a C epoll server, the ceiling). The Python ones run as
``python -m bench.reference.<name> --host H --port P [--loop uvloop|asyncio]``.
"""
