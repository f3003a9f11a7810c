"""The Keras models on TensorFlow: ``keras-sequential`` and ``keras-functional`` (servekit.keras_models, the
network every Keras backend shares)."""

import os

os.environ["KERAS_BACKEND"] = "tensorflow"  # before Keras is first imported: it reads its backend once

from servekit.keras_models import FunctionalBackend, SequentialBackend  # noqa: E402

__all__ = ["FunctionalBackend", "SequentialBackend"]
