"""Reference detectors, each packaged as a model archive that the runtime (worker.inference) runs.

`archive.write_archive` scripts a module and writes it with its manifest; `classical` is colour
deconvolution plus a difference-of-Gaussians blob detector written in torch ops; `cnn` is a small heatmap
CNN; `training` trains the CNN on synthetic cases of one scanner (bench/train_reference.py is the command).
Imports torch and worker.datasets; never app, celery, sqlalchemy or fastapi.
"""
