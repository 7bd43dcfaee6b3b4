"""initserve: deterministic neural-network weight initialization as a service."""

__version__ = "0.1.0"
