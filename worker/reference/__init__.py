"""Reference detectors and a baseline classifier, each packaged as a model archive that the runtime
(worker.inference) runs.

`archive.write_archive` scripts a module and writes it with its manifest; `classical` is colour
deconvolution plus a difference-of-Gaussians blob detector written in torch ops; `cnn` is a small heatmap
CNN; `training` trains the CNN on synthetic cases of one scanner (bench/train_reference.py is the command);
`classifier` trains and writes the MIDOG 2025 Track 2 baseline (`build_classifier_archive`).
Imports torch and worker.datasets; never app, celery, sqlalchemy or fastapi.
"""
