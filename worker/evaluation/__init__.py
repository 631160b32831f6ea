"""The scoring core: pure functions that score MIDOG-style detections exactly as the official evaluation does.

May import only the standard library, numpy and scipy. Never imports app, Celery, SQLAlchemy, FastAPI, pydantic
or torch: the worker, the upload validator, the CLI and the tests all call these same functions.
"""

# The scoring core's version, part of every result's scoring fingerprint (app.scoring). Bump it with any change
# that can move a number (matching, counting, AP numerics, bootstrap): results of two versions are never ranked
# side by side, and organisers re-evaluate their phases to adopt the new one.
SCORER_VERSION = "1"
