"""The initserve HTTP service: a thin FastAPI layer over :mod:`initserve.engine`.

Build the app with :func:`initserve.api.app.create_app`; run it with ``initserve serve``.
"""
