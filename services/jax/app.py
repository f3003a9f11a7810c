"""The JAX service (port 8004): ``flax`` (Flax NNX) and ``keras-jax`` (Keras 3 on JAX) behind the common HTTP core."""

from threads import before_jax_starts

from servekit.logs import configure_logging
from servekit.settings import Settings

configure_logging()
settings = Settings.from_env(default_port=8004)
# Before JAX starts its runtime: XLA sizes its CPU thread pool then, and has no setting for it.
threads = before_jax_starts(settings)

import flax  # noqa: E402
import jax  # noqa: E402
from backend import FlaxBackend, KerasJaxBackend  # noqa: E402

from servekit.app import create_app  # noqa: E402
from servekit.backend import FrameworkInfo  # noqa: E402
from servekit.keras_models import keras_versions  # noqa: E402

info = FrameworkInfo(
    framework="jax",
    version=jax.__version__,
    threads=threads,
    versions={"jaxlib": jax.lib.__version__, "flax": flax.__version__, **keras_versions()},
)
app = create_app([FlaxBackend, KerasJaxBackend], info, settings)
