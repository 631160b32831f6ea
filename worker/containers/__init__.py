"""OCI container submissions: archive validation before loading, and the grand-challenge I/O contract runner.

`archive.validate_image_archive` checks a `docker save` / `podman save` archive from its manifest.json and
image config without loading it; `engine.load_image` loads it on the worker; `contract.run_cases` runs the
image once per case in the sandbox; `runner.ContainerRunner` is the pipeline's Runner for container
submissions. Imports the stdlib, worker.errors, worker.evaluation and worker.sandbox only; must not import
Celery, SQLAlchemy, FastAPI or torch.
"""
