"""The lab's services: one package each, plus shared code in ``services.common``."""
