"""The PyTorch service (port 8002): ``torch`` and ``keras-torch`` (Keras 3 on PyTorch) behind the common HTTP core."""

import torch
from backend import KerasTorchBackend, TorchBackend

from servekit.app import create_app
from servekit.backend import FrameworkInfo
from servekit.keras_models import keras_versions
from servekit.logs import configure_logging
from servekit.settings import Settings

configure_logging()
settings = Settings.from_env(default_port=8002)
# Explicit thread counts, so that every framework runs on what it reports.
torch.set_num_threads(settings.intra_op_threads)
torch.set_num_interop_threads(settings.inter_op_threads)

info = FrameworkInfo(
    framework="torch",
    version=torch.__version__.split("+")[0],
    threads={"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()},
    versions=keras_versions(),
)
app = create_app([TorchBackend, KerasTorchBackend], info, settings)
