"""The Keras service (port 8001): ``keras-sequential`` and ``keras-functional`` behind the common HTTP core."""

import tensorflow as tf
from backend import FunctionalBackend, SequentialBackend

from servekit.app import create_app
from servekit.backend import FrameworkInfo
from servekit.keras_models import keras_versions
from servekit.logs import configure_logging
from servekit.settings import Settings

configure_logging()
settings = Settings.from_env(default_port=8001)
# Explicit thread counts, set before TensorFlow starts its runtime, so that comparisons say what they ran on.
tf.config.threading.set_intra_op_parallelism_threads(settings.intra_op_threads)
tf.config.threading.set_inter_op_parallelism_threads(settings.inter_op_threads)

keras_info = keras_versions()
info = FrameworkInfo(
    framework="keras",
    version=keras_info.pop("keras"),
    threads={
        "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
    },
    versions={"tensorflow": tf.__version__, **keras_info},
)
app = create_app([SequentialBackend, FunctionalBackend], info, settings)
