import numpy as np

from servekit.buckets import bucket_sizes, run_in_buckets


def test_bucket_sizes_double_up_to_the_maximum():
    assert bucket_sizes(1) == [1]
    assert bucket_sizes(32) == [1, 2, 4, 8, 16, 32]
    assert bucket_sizes(24) == [1, 2, 4, 8, 16, 24]


def test_every_call_has_a_bucket_shape_and_the_padding_is_dropped():
    shapes = []

    def call(x):
        shapes.append(len(x))
        return x.reshape(len(x), -1)[:, :10] + 1.0

    x = np.random.default_rng(0).random((75, 28, 28, 1), dtype=np.float32)
    out = run_in_buckets(call, x, bucket_sizes(32))
    assert shapes == [32, 32, 16]  # 75 = 32 + 32 + 11 (padded to 16)
    assert np.array_equal(out, x.reshape(75, -1)[:, :10] + 1.0)
    assert run_in_buckets(call, x[:3], bucket_sizes(32)).shape == (3, 10) and shapes[-1] == 4
