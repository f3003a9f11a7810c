from servekit.metrics import GatewayMetrics, bounded_path


def test_backend_call_paths_become_bounded_labels():
    assert bounded_path("/train/3f2a9c1b7d4e?x=1") == "/train/<job_id>"
    assert bounded_path("/models/torch/versions/12/promote") == "/models/torch/versions/<version>/promote"
    assert bounded_path("/predict?model=torch") == "/predict"
    metrics = GatewayMetrics()
    for job in ("a" * 12, "b" * 12, "c" * 12):
        metrics.observe_backend_call("torch", f"/train/{job}", 0.01, True)
    text = metrics.render().decode()
    assert text.count('path="/train/<job_id>"') >= 1 and "aaaaaaaaaaaa" not in text
