"""RFC 862 TCP echo server on asyncio, run on uvloop or the stdlib loop.

``python -m services.uvloop_echo --port 9002 --loop uvloop|asyncio``: the same
:class:`asyncio.Protocol` code runs on both loops, so the two can be compared.
"""
