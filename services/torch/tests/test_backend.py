from backend import KerasTorchBackend, TorchBackend

from servekit.backend_suite import BackendSuite


class TestTorchBackend(BackendSuite):
    backend_class = TorchBackend


class TestKerasTorchBackend(BackendSuite):
    backend_class = KerasTorchBackend


def test_keras_torch_fits_with_freed_memory_kept(monkeypatch):
    """keras-torch's fit runs inside servekit.memory.freed_memory_kept (glibc keeps the freed activations for the
    next step instead of unmapping them), and leaves it afterwards; its speed is scripts/bench_training.py's."""
    import contextlib

    import servekit.keras_models as keras_models

    seen = []

    @contextlib.contextmanager
    def recording():
        seen.append("kept")
        yield
        seen.append("released")

    monkeypatch.setattr(keras_models, "freed_memory_kept", recording)
    monkeypatch.setattr(keras_models.SequentialBackend, "train", lambda self, *args: seen.append("fit") or [])
    assert KerasTorchBackend().train(None, None, None) == []
    assert seen == ["kept", "fit", "released"]
