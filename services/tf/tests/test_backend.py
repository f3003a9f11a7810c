from backend import HybridBackend, NativeBackend

from servekit.backend_suite import BackendSuite


class TestNativeBackend(BackendSuite):
    backend_class = NativeBackend


class TestHybridBackend(BackendSuite):
    backend_class = HybridBackend
