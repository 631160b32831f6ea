"""The scoring core: pure functions that score MIDOG-style detections exactly as the official evaluation does.

May import only the standard library, numpy and scipy. Never imports app, Celery, SQLAlchemy, FastAPI, pydantic
or torch: the worker, the upload validator, the CLI and the tests all call these same functions.
"""
