"""Python client for initserve."""
