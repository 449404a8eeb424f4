"""Code shared by every service: settings, logging, shutdown signals, health probe.

Services depend on this package and never on each other.
"""
