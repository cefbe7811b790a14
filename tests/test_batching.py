import jax
import numpy as np
import pytest

from jaxunlearn.data import _batching as b


@pytest.mark.parametrize("n,bs", [(10, 3), (9, 3), (1, 4), (64, 64)])
def test_epoch_indices_cover_each_example_once(n, bs):
    idx, mask = jax.jit(b.epoch_indices, static_argnums=(1, 2))(
        jax.random.key(0), n, bs
    )
    assert idx.shape == mask.shape == (b.num_batches(n, bs), bs)
    seen = np.asarray(idx)[np.asarray(mask)]
    np.testing.assert_array_equal(np.sort(seen), np.arange(n))
    # padding only at the very end
    flat = np.asarray(mask).reshape(-1)
    assert flat[:n].all() and not flat[n:].any()


def test_epoch_indices_shuffle_depends_on_key():
    a, _ = b.epoch_indices(jax.random.key(0), 50, 10)
    c, _ = b.epoch_indices(jax.random.key(1), 50, 10)
    d, _ = b.epoch_indices(jax.random.key(0), 50, 10, shuffle=False)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(np.asarray(d).reshape(-1), np.arange(50))


def test_cycle_indices_balanced_use():
    idx, mask = b.cycle_indices(jax.random.key(0), 7, 4, 5)  # 20 draws of 7
    assert idx.shape == (5, 4) and bool(mask.all())
    counts = np.bincount(np.asarray(idx).reshape(-1), minlength=7)
    assert counts.max() - counts.min() <= 1
    assert idx.min() >= 0 and idx.max() < 7


def test_gather_and_padded_batches():
    arrays = {"image": np.arange(10.0)[:, None], "label": np.arange(10)}
    stacked = b.padded_batches(arrays, 4)
    assert stacked["image"].shape == (3, 4, 1)
    assert stacked["mask"].sum() == 10
    np.testing.assert_array_equal(stacked["label"][stacked["mask"]], np.arange(10))
    idx, mask = b.epoch_indices(jax.random.key(0), 10, 4)
    batch = b.gather(arrays, idx[0], mask[0])
    np.testing.assert_array_equal(batch["label"], np.asarray(idx[0]))


def test_bad_sizes():
    with pytest.raises(ValueError, match="batch_size"):
        b.num_batches(10, 0)
    with pytest.raises(ValueError, match="empty"):
        b.epoch_indices(jax.random.key(0), 0, 4)
