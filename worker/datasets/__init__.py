"""Test sets: manifests, import of MIDOG-format data, the synthetic multi-scanner generators, the decoded cache.

Imports numpy, scipy, tifffile and Pillow only where needed; never app, celery, sqlalchemy, fastapi or torch.
Submodules: `manifest` (test-set layout and manifest.json), `tiff` (TIFF with resolution tags), `synth`
(synthetic H&E generator), `midog` (MIDOG.json / official ground truth import), `cache` (decoded-image cache);
for classification sets (MIDOG 2025 Track 2): `stacks` (stacks of patches and their ground truth),
`synth_classification` (synthetic normal and atypical figures), `atypical` (MIDOG 2025 atypical / AMi-Br CSV
import). docs/test-sets.md describes both kinds of set.
"""
