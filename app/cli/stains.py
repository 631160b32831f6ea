"""Stain vectors shared by the demo's detectors (the blob detector of app.cli.demo, the lobe counter of
app.cli.demo_track2). Standard library only."""

from __future__ import annotations

# Ruifrok & Johnston's haematoxylin, eosin and DAB optical-density vectors (rows), as skimage's rgb2hed uses.
RUIFROK_HE = ((0.650, 0.704, 0.286), (0.072, 0.990, 0.105), (0.268, 0.570, 0.776))
