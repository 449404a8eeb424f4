"""Locust load tests for the lab's services, and the pieces they are made of.

``locustfile.py`` is what Locust loads; ``users.py`` holds the users,
``tcp_client.py`` the byte-verifying TCP echo client, ``gate.py`` the pass/fail
thresholds (pure Python, no Locust import), ``options.py`` the custom arguments,
``local.py`` the no-Docker runner and ``bench.py`` the efficiency measurement.

Only ``locustfile.py`` and ``users.py`` import Locust (and so gevent's monkey
patching); everything else, ``options.py`` included, is safe to import from
pytest. ``local.py`` and ``bench.py`` run on the host and share process
handling with the benchmark (``bench.servers``); the Locust image, which ships
``loadtest/`` without ``bench/``, never imports them.
"""
