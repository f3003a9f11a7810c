from backend import FunctionalBackend, SequentialBackend

from servekit.backend_suite import BackendSuite


class TestSequentialBackend(BackendSuite):
    backend_class = SequentialBackend


class TestFunctionalBackend(BackendSuite):
    backend_class = FunctionalBackend
