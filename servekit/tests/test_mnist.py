import functools
import http.server
import shutil
import threading

import numpy as np
import pytest

from servekit.mnist import FILES, MnistUnavailable, load_mnist, to_model_input, write_uncompressed


def test_split_sizes_and_order(mnist):
    assert len(mnist.train) == 54_000
    assert len(mnist.validation) == 6_000
    assert len(mnist.test) == 10_000
    assert mnist.train.images.shape == (54_000, 28, 28)
    assert mnist.train.images.dtype == np.uint8
    # The published first labels of the training and test files.
    assert list(mnist.train.labels[:5]) == [5, 0, 4, 1, 9]
    assert list(mnist.test.labels[:5]) == [7, 2, 1, 0, 4]
    assert set(np.unique(mnist.validation.labels)) == set(range(10))


def test_hash_is_stable_and_sensitive(mnist, mnist_dir):
    again = load_mnist(mnist_dir, mirrors=())
    assert again.sha256 == mnist.sha256
    assert len(mnist.sha256) == 64
    from servekit.mnist import arrays_sha256

    changed = mnist.test.images.copy()
    changed[0, 0, 0] ^= 1
    assert arrays_sha256(changed) != arrays_sha256(mnist.test.images)


def test_head_limits_and_model_input(mnist):
    head = mnist.train.head(100)
    assert len(head) == 100
    x = to_model_input(head.images)
    assert x.shape == (100, 28, 28, 1) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0


def test_missing_files_without_mirrors_give_clear_error(tmp_path):
    with pytest.raises(MnistUnavailable, match=r"MNIST not found in .* set MNIST_DIR"):
        load_mnist(tmp_path, mirrors=())


def test_unreachable_mirror_is_reported(tmp_path):
    with pytest.raises(MnistUnavailable, match="127.0.0.1:9"):
        load_mnist(tmp_path, mirrors=("http://127.0.0.1:9/",))


def test_corrupt_file_is_refused(tmp_path, mnist_dir):
    for name, _ in FILES.values():
        shutil.copy(mnist_dir / name, tmp_path / name)
    (tmp_path / FILES["test_labels"][0]).write_bytes(b"not gzip at all")
    with pytest.raises(MnistUnavailable, match="not a valid gzip"):
        load_mnist(tmp_path, mirrors=())


@pytest.fixture
def mirror(mnist_dir):
    """A real HTTP server on loopback serving the shared MNIST folder, counting requests."""
    requests_seen = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requests_seen.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(mnist_dir)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", requests_seen
    server.shutdown()


def test_download_from_mirror_verifies_and_stores(tmp_path, mirror, mnist):
    url, seen = mirror
    target = tmp_path / "fresh"
    data = load_mnist(target, mirrors=("http://127.0.0.1:9/", url))  # the first mirror is down
    assert data.sha256 == mnist.sha256
    assert sorted(p.name for p in target.iterdir()) == sorted(name for name, _ in FILES.values())
    # A second load reads the stored files: no new downloads.
    count = len(seen)
    load_mnist(target, mirrors=(url,))
    assert len(seen) == count


def test_download_with_wrong_content_is_refused(tmp_path, mnist_dir):
    # A mirror that serves the test labels under every name fails the md5 check.
    bad = tmp_path / "bad-mirror"
    bad.mkdir()
    for name, _ in FILES.values():
        shutil.copy(mnist_dir / FILES["test_labels"][0], bad / name)

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(bad))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(MnistUnavailable, match="md5 mismatch"):
            load_mnist(tmp_path / "target", mirrors=(f"http://127.0.0.1:{server.server_address[1]}/",))
    finally:
        server.shutdown()
    assert not (tmp_path / "target" / FILES["train_images"][0]).exists()


def test_write_uncompressed(tmp_path, mnist_dir):
    target = write_uncompressed(mnist_dir, tmp_path / "raw")
    assert (target / "t10k-labels-idx1-ubyte").stat().st_size == 10_008
    assert (target / "train-images-idx3-ubyte").stat().st_size == 47_040_016
