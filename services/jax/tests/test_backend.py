import threading

import numpy as np
from backend import FlaxBackend, KerasJaxBackend

from servekit.backend_suite import BackendSuite
from servekit.mnist import to_model_input


class TestFlaxBackend(BackendSuite):
    backend_class = FlaxBackend


class TestKerasJaxBackend(BackendSuite):
    backend_class = KerasJaxBackend

    def test_predictions_beside_an_evaluation_keep_answering(self, trained, mnist, x):
        """Keras' JAX trainer empties the model's variables while ``evaluate`` runs: a prediction served meanwhile
        (the service answers /predict beside /evaluate) must still see the weights."""
        backend = trained[0]
        expected = backend.predict(x)
        images, labels = to_model_input(mnist.test.images[:5000]), mnist.test.labels[:5000]
        evaluating = threading.Thread(target=lambda: [backend.evaluate(images, labels) for _ in range(3)])
        evaluating.start()
        answers = []
        while evaluating.is_alive():
            answers.append(backend.predict(x))
        evaluating.join()
        assert answers and all(np.allclose(answer, expected, atol=1e-6) for answer in answers)
