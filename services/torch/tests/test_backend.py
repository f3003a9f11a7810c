from backend import KerasTorchBackend, TorchBackend

from servekit.backend_suite import BackendSuite


class TestTorchBackend(BackendSuite):
    backend_class = TorchBackend


class TestKerasTorchBackend(BackendSuite):
    backend_class = KerasTorchBackend
