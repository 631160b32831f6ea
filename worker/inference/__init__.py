"""The inference runtime for model archives: the only package that imports torch.

Runs INSIDE the sandbox (`python -m worker.inference.run`), reading the archive and the images read-only and
writing one grand-challenge "Multiple points" JSON per image (detectors) or one MIDOG 2025 Track 2 list per
stack of patches (classifiers). Must not import app, celery, sqlalchemy or fastapi. Submodules: `images`
(listing and decoding inputs, no torch), `stacks` (classification inputs: stacks and their pages, no torch),
`output` (the output files, no torch), `tiling` (tile grid and core regions), `decode` (peak finding and NMS
on the device), `detector` (one archive's model applied to one image), `pipeline` (loader threads, pinned
memory, overlap of decode and compute), `classifier` (a classifier archive over stacks), `run` (the command
line).
"""
