"""The one exception type of worker.datasets. Imports nothing but the stdlib."""


class DatasetError(ValueError):
    """Invalid input data (annotation file, image, manifest). The message is one line naming the file and the
    field, e.g. ``MIDOG.json: annotations[17].bbox: expected 4 numbers``; the CLI prints it and exits with 2."""
