from backend import FlaxBackend, KerasJaxBackend

from servekit.backend_suite import BackendSuite


class TestFlaxBackend(BackendSuite):
    backend_class = FlaxBackend


class TestKerasJaxBackend(BackendSuite):
    backend_class = KerasJaxBackend
