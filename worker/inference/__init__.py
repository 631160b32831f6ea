"""The inference runtime for model archives: the only package that imports torch.

Runs INSIDE the sandbox (`python -m worker.inference.run`), reading the archive and the images read-only and
writing one grand-challenge "Multiple points" JSON per image. Must not import app, celery, sqlalchemy or
fastapi. Submodules: `images` (listing and decoding inputs, no torch), `output` (Multiple points files, no
torch), `tiling` (tile grid and core regions), `decode` (peak finding and NMS on the device), `detector`
(one archive's model applied to one image), `pipeline` (loader threads, pinned memory, overlap of decode and
compute), `run` (the command line).
"""
