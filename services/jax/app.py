"""The JAX service (port 8004): ``flax`` (Flax NNX) and ``keras-jax`` (Keras 3 on JAX) behind the common HTTP core."""

from threads import limit_xla_threads

from servekit.logs import configure_logging
from servekit.memory import one_malloc_arena
from servekit.settings import Settings

configure_logging()
settings = Settings.from_env(default_port=8004)
# Before JAX starts its runtime: XLA sizes its CPU thread pool then, and has no setting for it. A process that
# trains has its threads share glibc's main heap, which keeps their freed buffers (servekit.memory.one_malloc_arena:
# keras-jax's epoch 40% shorter); a server keeps an arena per thread (one arena cost it 5-10% of its requests per
# second in an A/B run of scripts/bench on flax and keras-jax at concurrency 1 and 16).
threads = limit_xla_threads(settings.intra_op_threads)
threads["malloc_arena_max"] = 1 if settings.trains and one_malloc_arena() else None  # None: glibc's default

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
