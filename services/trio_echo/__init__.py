"""RFC 862 TCP echo server on trio: ``python -m services.trio_echo --port 9001``."""
