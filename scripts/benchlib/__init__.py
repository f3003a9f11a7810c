"""The pieces of ``scripts/bench``, one job each.

- ``payload``: the request every endpoint gets (one real MNIST test digit as a multipart PNG upload);
- ``loadgen``: the load generators (wrk, or a multi-process Python client) and their results;
- ``cpu``: the CPU time of the processes that serve an endpoint (found by listening port, or given pids);
- ``torch_service``: starting the torch service (and training a tiny model when none is given);
- ``torchserve``: TorchServe as a peer, serving the same weights through ``scripts/torchserve/handler.py``;
- ``trivial``: a trivial HTTP endpoint, to measure how fast the load generator itself is;
- ``report``: the table, the JSON and the chart.
"""
