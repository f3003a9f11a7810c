from backend import TorchBackend

from servekit.backend_suite import BackendSuite


class TestTorchBackend(BackendSuite):
    backend_class = TorchBackend
