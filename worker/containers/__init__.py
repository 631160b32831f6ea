"""OCI container submissions: archive validation before loading, and the grand-challenge I/O contract runner.

`archive.validate_image_archive` checks a `docker save` / `podman save` archive (plain or gzipped, in one
streaming pass) from its manifest.json, image config and layers' accounts without loading it, resolving
USER with `image_user`; `engine` decompresses, loads or reuses it on the worker; `model_tarball` checks and
extracts weights uploaded apart from the image; `contract.run_case` runs the image once per case (exec
mode) and `invoke.run_invoke` serves all cases from one container (invoke mode); `causes` names the first
cause of a failure; `runner.ContainerRunner` is the pipeline's Runner for container submissions. Imports
the stdlib, worker.errors, worker.evaluation, worker.runners and worker.sandbox only; must not import
Celery, SQLAlchemy, FastAPI or torch.
"""
