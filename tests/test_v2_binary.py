"""The Open Inference Protocol's binary tensor data extension, over real HTTP, on every service.

tritonclient.http with its defaults (binary input, binary output) gets what JSON mode gets; binary output is
asked per output or for the whole request; every malformed binary body, written out or fuzzed, is a 400 with
a JSON error (the body size limit stays a 413).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from servekit.testing import authorized, wait_for_job

HEADER_LENGTH = "Inference-Header-Content-Length"
IMAGE_BYTES = 28 * 28 * 4
BATCH = 8
API = authorized()


@pytest.fixture(scope="module")
def trained(service):
    """The service's first model, trained for one epoch on 1,000 images: the model every test here asks."""
    model = service.models[0]
    accepted = API.post(service.url + "/train", json={"model": model, "epochs": 1, "train_limit": 1000},
                        timeout=30).json()
    assert wait_for_job(service.url + accepted["status_url"], timeout=900)["status"] == "succeeded"
    return model


@pytest.fixture(scope="module")
def pixels(digits):
    """Eight real test digits as the model's FP32 input, (8, 28, 28, 1) in 0..1."""
    return (digits[0][:BATCH] / 255.0).astype(np.float32).reshape(BATCH, 28, 28, 1)


def infer_url(service, model: str) -> str:
    return f"{service.url}/v2/models/{model}/infer"


def binary_input(x: np.ndarray, **parameters) -> dict:
    """An infer request's JSON header whose input's data follows it as binary data."""
    size = x.size * 4
    return {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape),
                        "parameters": {"binary_data_size": size, **parameters}}]}


def json_input(x: np.ndarray) -> dict:
    return {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}


def post_binary(url: str, header: dict | bytes, tail: bytes, header_length: str | None = None) -> requests.Response:
    """POST the JSON header then ``tail``, with Inference-Header-Content-Length (the header's length unless given)."""
    head = header if isinstance(header, bytes) else json.dumps(header).encode()
    length = str(len(head)) if header_length is None else header_length
    return requests.post(url, data=head + tail, headers={HEADER_LENGTH: length}, timeout=60)


def split_answer(response: requests.Response) -> tuple[dict, bytes]:
    """A binary answer's JSON header and the bytes after it."""
    length = int(response.headers[HEADER_LENGTH])
    return json.loads(response.content[:length]), response.content[length:]


def assert_json_error(response: requests.Response, status: int = 400, fragment: str = "") -> None:
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.headers["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert isinstance(error, str) and fragment in error, error


def test_server_metadata_lists_the_extension(service):
    assert "binary_tensor_data" in requests.get(service.url + "/v2", timeout=30).json()["extensions"]


def test_tritonclient_defaults_match_json_mode(service, trained, pixels):
    """Binary in and out (the client's defaults), or binary out for all outputs, equal JSON mode's answer."""
    import tritonclient.http as triton

    client = triton.InferenceServerClient(url=service.url.removeprefix("http://"))

    def infer(binary: bool, list_output: bool = True):
        tensor = triton.InferInput("input", list(pixels.shape), "FP32")
        tensor.set_data_from_numpy(pixels, binary_data=binary)
        outputs = [triton.InferRequestedOutput("probabilities", binary_data=binary)] if list_output else None
        return client.infer(trained, [tensor], outputs=outputs)

    as_json = infer(binary=False)
    assert "data" in as_json.get_response()["outputs"][0]
    expected = as_json.as_numpy("probabilities")
    assert expected.shape == (BATCH, 10)
    for result in (infer(binary=True), infer(binary=True, list_output=False)):
        output = result.get_response()["outputs"][0]
        assert "data" not in output and output["parameters"]["binary_data_size"] == BATCH * 10 * 4
        probabilities = result.as_numpy("probabilities")
        assert probabilities.dtype == np.float32 and probabilities.shape == (BATCH, 10)
        np.testing.assert_allclose(probabilities, expected, rtol=0, atol=1e-6)
        assert (probabilities.argmax(1) == expected.argmax(1)).all()


@pytest.mark.parametrize("request_parameters, output, binary", [
    (None, None, False),
    ({"binary_data_output": True}, None, True),
    ({"binary_data_output": True}, {"name": "probabilities"}, True),  # a listed output follows the request
    ({"binary_data_output": True}, {"name": "probabilities", "parameters": {"binary_data": False}}, False),
    (None, {"name": "probabilities", "parameters": {"binary_data": True}}, True),
    ({"binary_data_output": False}, {"name": "probabilities", "parameters": {"binary_data": True}}, True),
    ({"binary_data_output": False}, None, False),
])
@pytest.mark.parametrize("binary_in", [True, False], ids=["binary-in", "json-in"])
def test_binary_output_per_output_or_per_request(service, trained, pixels, request_parameters, output, binary,
                                                 binary_in):
    header = binary_input(pixels) if binary_in else json_input(pixels)
    header["id"] = "req-7"
    if request_parameters is not None:
        header["parameters"] = request_parameters
    if output is not None:
        header["outputs"] = [output]
    url = infer_url(service, trained)
    if binary_in:
        response = post_binary(url, header, pixels.astype("<f4").tobytes())
    else:
        response = requests.post(url, json=header, timeout=60)
    assert response.status_code == 200, response.text[:300]
    reference = requests.post(url, json=json_input(pixels), timeout=60).json()["outputs"][0]
    if binary:
        assert response.headers["Content-Type"] == "application/octet-stream"
        answer, tail = split_answer(response)
        (meta,) = answer["outputs"]
        assert meta["parameters"]["binary_data_size"] == len(tail) == BATCH * 10 * 4 and "data" not in meta
        values = np.frombuffer(tail, dtype="<f4")
    else:
        assert response.headers["Content-Type"].startswith("application/json") and HEADER_LENGTH not in response.headers
        answer = response.json()
        (meta,) = answer["outputs"]
        values = np.asarray(meta["data"], dtype=np.float32)
    assert answer["id"] == "req-7" and answer["model_name"] == trained
    assert meta["name"] == "probabilities" and meta["datatype"] == "FP32" and meta["shape"] == [BATCH, 10]
    np.testing.assert_allclose(values, np.asarray(reference["data"], dtype=np.float32), rtol=0, atol=1e-6)


def _sized(header: dict, size) -> dict:
    header["inputs"][0]["parameters"]["binary_data_size"] = size
    return header


ONE = np.zeros((1, 28, 28, 1), np.float32)
ONE_BYTES = ONE.tobytes()
# name: (JSON header or raw header bytes, bytes after it, Inference-Header-Content-Length or None, error fragment)
MALFORMED = {
    "header-length-not-a-number": (binary_input(ONE), ONE_BYTES, "abc", HEADER_LENGTH),
    "header-length-negative": (binary_input(ONE), ONE_BYTES, "-5", HEADER_LENGTH),
    "header-length-zero": (binary_input(ONE), ONE_BYTES, "0", "between 1 and"),
    "header-length-past-the-body": (binary_input(ONE), ONE_BYTES, "999999", "between 1 and"),
    "header-length-huge": (binary_input(ONE), ONE_BYTES, "9" * 5000, "whole number"),
    "header-length-cuts-the-json": (binary_input(ONE), ONE_BYTES, "20", "not valid JSON"),
    "header-length-takes-tensor-bytes": (binary_input(ONE), ONE_BYTES, str(len(json.dumps(binary_input(ONE))) + 4),
                                         "not valid JSON"),
    "header-not-an-object": (b"[1, 2]", ONE_BYTES, None, "must be an object"),
    "truncated-tensor": (binary_input(ONE), ONE_BYTES[:-1], None, "truncated"),
    "missing-tensor": (binary_input(ONE), b"", None, "truncated"),
    "extra-bytes": (binary_input(ONE), ONE_BYTES + b"\0\0\0\0", None, "4 bytes more"),
    "bytes-but-no-binary-input": (json_input(ONE), ONE_BYTES, None, "no parameters.binary_data_size"),
    "size-and-body-agree-but-not-the-shape": (_sized(binary_input(ONE), IMAGE_BYTES - 4), ONE_BYTES[:-4], None,
                                              "needs 3,136"),
    "huge-claimed-size": (_sized(binary_input(ONE), 2**62), ONE_BYTES, None, "truncated"),
    "negative-size": (_sized(binary_input(ONE), -1), ONE_BYTES, None, "whole number of bytes"),
    "size-as-text": (_sized(binary_input(ONE), "3136"), ONE_BYTES, None, "whole number of bytes"),
    "size-as-bool": (_sized(binary_input(ONE), True), ONE_BYTES, None, "whole number of bytes"),
    "size-and-json-data": ({"inputs": [{**json_input(ONE)["inputs"][0], "parameters": {"binary_data_size": 3136}}]},
                           ONE_BYTES, None, "both 'data' and"),
    "bytes-datatype": ({"inputs": [{**binary_input(ONE)["inputs"][0], "datatype": "BYTES"}]}, ONE_BYTES, None,
                       "BYTES"),
    "shape-disagrees": ({"inputs": [{**binary_input(ONE)["inputs"][0], "shape": [1, 28, 28]}]}, ONE_BYTES, None,
                        "shape"),
    "not-a-pixel": (binary_input(ONE), np.full(784, np.nan, "<f4").tobytes(), None, "0..1"),
    "unknown-output": ({**binary_input(ONE), "outputs": [{"name": "logits"}]}, ONE_BYTES, None, "unknown output"),
    "binary-data-not-a-bool": ({**binary_input(ONE), "outputs": [{"name": "probabilities",
                                                                  "parameters": {"binary_data": "yes"}}]},
                               ONE_BYTES, None, "true or false"),
    "binary-data-output-not-a-bool": ({**binary_input(ONE), "parameters": {"binary_data_output": 1}}, ONE_BYTES,
                                      None, "true or false"),
    "parameters-not-an-object": (binary_input(ONE) | {"parameters": [1]}, ONE_BYTES, None, "must be an object"),
    "classification-asked": ({**binary_input(ONE), "outputs": [{"name": "probabilities",
                                                                "parameters": {"classification": 3}}]},
                             ONE_BYTES, None, "not supported"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_binary_bodies_are_400s(service, trained, case):
    header, tail, header_length, fragment = MALFORMED[case]
    assert_json_error(post_binary(infer_url(service, trained), header, tail, header_length), 400, fragment)


def test_binary_data_size_without_the_header_is_a_400(service, trained):
    response = requests.post(infer_url(service, trained), json=binary_input(ONE), timeout=60)
    assert_json_error(response, 400, HEADER_LENGTH)


def test_a_binary_body_over_the_limit_is_a_413(service, trained):
    images = np.zeros((3400, 28, 28, 1), np.float32)  # 10.7 MB: past the default MAX_UPLOAD_BYTES of 10 MiB
    response = post_binary(infer_url(service, trained), binary_input(images), images.tobytes())
    assert_json_error(response, 413, "limit")


@st.composite
def broken_bodies(draw):
    """A binary infer request of 1-3 blank images with one thing wrong: (header bytes, tail, header length)."""
    count = draw(st.integers(1, 3))
    x = np.zeros((count, 28, 28, 1), np.float32)
    header = binary_input(x)
    tail = x.tobytes()
    length = None
    fault = draw(st.sampled_from(["length", "size", "truncate", "extra", "shape", "length-off"]))
    if fault == "length":
        printable = st.characters(min_codepoint=33, max_codepoint=126)  # what a header value can carry
        length = draw(st.one_of(st.text(printable, max_size=30).filter(lambda t: not t.isdigit()),
                                st.integers(max_value=0).map(str),
                                st.integers(min_value=10**6, max_value=10**30).map(str)))
    elif fault == "size":
        size = draw(st.one_of(st.integers(min_value=-(2**70), max_value=2**70).filter(lambda s: s != len(tail)),
                              st.floats(allow_nan=False), st.text(max_size=5), st.booleans(), st.none()))
        header["inputs"][0]["parameters"]["binary_data_size"] = size
    elif fault == "truncate":
        tail = tail[:draw(st.integers(0, len(tail) - 1))]
    elif fault == "extra":
        tail += draw(st.binary(min_size=1, max_size=64))
    elif fault == "shape":
        header["inputs"][0]["shape"] = [draw(st.integers(2, 4)) * count, 28, 28, 1]
    head = json.dumps(header).encode()
    if fault == "length-off":
        length = str(len(head) + draw(st.integers(-len(head) + 1, 64).filter(lambda d: d != 0)))
    return head, tail, length


@settings(max_examples=40)
@given(body=broken_bodies())
def test_fuzzed_binary_bodies_are_always_json_400s(service, trained, body):
    head, tail, length = body
    assert_json_error(post_binary(infer_url(service, trained), head, tail, length), 400)
