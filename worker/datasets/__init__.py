"""Test sets: manifests, import of MIDOG-format data, the synthetic multi-scanner generator, the decoded cache.

Imports numpy, scipy, tifffile and Pillow only where needed; never app, celery, sqlalchemy, fastapi or torch.
Submodules: `manifest` (test-set layout and manifest.json), `tiff` (TIFF with resolution tags), `synth`
(synthetic H&E generator), `midog` (MIDOG.json / official ground truth import), `cache` (decoded-image cache).
"""
