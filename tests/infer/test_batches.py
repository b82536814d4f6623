"""The runtime-independent prediction loop (lits/infer/batches.py): batches come back in order, each handed over only
once the next one is under way (so that a GPU never waits for the host between batches), with the same values as
running them one at a time."""

from contextlib import nullcontext

import numpy as np

from lits.infer.batches import add_identity_view, predict_batches, predict_volume


class RecordingNetwork:
    """A numpy SliceNetwork whose 'logits' are the input's first channel twice (liver, tumour), recording each call."""

    def __init__(self):
        self.calls = []

    def inference(self):
        return nullcontext()

    def to_batch(self, array):
        return array

    def flip(self, x, dims):
        return np.flip(x, dims)

    def pad(self, x, pad_y, pad_x):
        return np.pad(x, ((0, 0), (0, 0), (0, pad_y), (0, pad_x)))

    def logits(self, x):
        self.calls.append(("forward", len(x)))
        return np.concatenate([x[:, :1], -x[:, :1]], axis=1).astype(np.float32)

    def sigmoid(self, logits, temperatures):
        return 1 / (1 + np.exp(-logits))

    def to_host(self, x):
        self.calls.append(("to_host", len(x)))
        return x.transpose(1, 0, 2, 3)

    def numpy(self, handle):
        self.calls.append(("numpy", handle.shape[1]))
        return handle


def test_each_batch_is_handed_over_once_the_next_is_under_way():
    network = RecordingNetwork()
    image = np.random.default_rng(0).random((5, 8, 8), dtype=np.float32)
    seen = []
    for start, batch in predict_batches(network, image, batch_size=2, size_multiple=1):
        seen.append((start, batch.shape))
        network.calls.append(("yield", start))
    assert seen == [(0, (2, 2, 8, 8)), (2, (2, 2, 8, 8)), (4, (2, 1, 8, 8))]
    assert network.calls == [
        ("forward", 2), ("to_host", 2),
        ("forward", 2), ("to_host", 2), ("numpy", 2), ("yield", 0),
        ("forward", 1), ("to_host", 1), ("numpy", 2), ("yield", 2),
        ("numpy", 1), ("yield", 4),
    ]  # fmt: skip


def test_the_assembled_volume_is_the_batches_values():
    image = np.random.default_rng(1).random((7, 6, 10), dtype=np.float32)
    probs = predict_volume(RecordingNetwork(), image, batch_size=3, size_multiple=4, flips=((), (2,)))
    expected = 1 / (1 + np.exp(-image))  # flips of a per-pixel network average to the same values
    np.testing.assert_allclose(probs[0], expected, rtol=1e-6)
    np.testing.assert_allclose(probs[1], 1 - expected, rtol=1e-6)


def test_add_identity_view_gives_the_mean_over_all_views():
    """Three flipped views averaging 1.0 and an identity view of 0.2: the mean over the four is 0.8."""
    flipped, plain = np.full((2, 1, 2, 2), 1.0, np.float32), np.full((2, 1, 2, 2), 0.2, np.float32)
    averaged = add_identity_view(flipped, plain, 3)
    assert averaged is flipped and np.allclose(averaged, 0.8)
