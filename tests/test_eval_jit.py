"""Every eval metric documented as jittable, under jax.jit and jax.vmap.

Each argument is either passed to the jitted function (a tracer inside) or
closed over (a concrete array inside the trace, where ``jnp`` operations are
still staged); every combination must give the eager result, and value checks
on closed-over arrays must still raise.
"""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn import eval as ev


def _cases():
    r = np.random.default_rng(0)
    logits = jnp.asarray(r.normal(size=(6, 4)), jnp.float32)
    labels = jnp.asarray(r.integers(0, 4, 6), jnp.int32)
    probs = jax.nn.softmax(logits)
    shadow_in = jnp.asarray(r.random((8, 6)) < 0.5).at[0].set(True).at[1].set(False)
    shadow = jnp.asarray(r.normal(size=(8, 6)), jnp.float32) + 2.0 * shadow_in
    target = jnp.asarray(r.normal(size=6), jnp.float32)
    unl = jnp.asarray(r.normal(size=(4, 6)), jnp.float32) + 1.0
    ret = jnp.asarray(r.normal(size=(4, 6)), jnp.float32)
    px = jnp.asarray(r.random(6), jnp.float32)
    rx = jnp.asarray(r.random((3, 6)), jnp.float32)
    pz = jnp.asarray(r.random(5), jnp.float32)
    rz = jnp.asarray(r.random((3, 5)), jnp.float32)
    return {
        "logit_confidence": (ev.logit_confidence, (logits, labels)),
        "logit_confidence_from_probs": (
            ev.logit_confidence_from_probs,
            (probs, labels),
        ),
        "lira": (ev.lira, (target, shadow, shadow_in)),
        "lira_offline": (
            functools.partial(ev.lira, online=False),
            (target, shadow, shadow_in),
        ),
        "ulira": (ev.ulira, (target, unl, ret)),
        "rmia": (ev.rmia, (px, rx, pz, rz)),
    }


CASES = _cases()
SUBSETS = [
    (name, closed)
    for name, (_, args) in CASES.items()
    for k in range(len(args) + 1)
    for closed in itertools.combinations(range(len(args)), k)
]


def _jit_with_closed(fn, args, closed):
    """``jax.jit`` of ``fn`` with the arguments at ``closed`` closed over."""
    passed = [i for i in range(len(args)) if i not in closed]

    def f(*xs):
        full = list(args)
        for i, x in zip(passed, xs, strict=True):
            full[i] = x
        return fn(*full)

    return jax.jit(f)(*[args[i] for i in passed])


@pytest.mark.parametrize("name, closed", SUBSETS)
def test_jit_with_any_argument_closed_over_matches_eager(name, closed):
    fn, args = CASES[name]
    expected = fn(*args)
    got = _jit_with_closed(fn, args, closed)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
        got,
        expected,
    )


@pytest.mark.parametrize("closed", [True, False])
@pytest.mark.parametrize("name", list(CASES))
def test_vmap_over_examples_matches_a_loop(name, closed):
    """Batched over a new leading axis of the first argument (e.g. models)."""
    fn, args = CASES[name]
    first = jnp.stack([args[0], args[0][::-1]])
    rest = args[1:]
    if closed:
        out = jax.jit(jax.vmap(lambda t: fn(t, *rest)))(first)
    else:
        in_axes = (0,) + (None,) * len(rest)
        out = jax.jit(jax.vmap(fn, in_axes=in_axes))(first, *rest)
    for j in range(2):
        want = fn(first[j], *rest)
        jax.tree.map(
            lambda a, b, j=j: np.testing.assert_allclose(a[j], b, rtol=1e-5, atol=1e-6),
            out,
            want,
        )


BAD_CLOSED = [
    # name, argument index, bad value, error type, message fragment
    ("logit_confidence", 1, jnp.array([0, 1, 2, 3, 4, 0]), ValueError, "labels"),
    ("logit_confidence", 0, jnp.full((6, 4), jnp.nan), ValueError, "logits"),
    (
        "logit_confidence_from_probs",
        1,
        jnp.array([0, 1, 2, 3, -1, 0]),
        ValueError,
        "labels",
    ),
    ("logit_confidence_from_probs", 0, -jnp.ones((6, 4)), ValueError, "probs"),
    ("lira", 2, jnp.ones((8, 6), bool), ValueError, "shadow_in"),
    ("lira", 0, jnp.full(6, jnp.inf), ValueError, "target_scores"),
    ("lira", 1, jnp.full((8, 6), jnp.nan), ValueError, "shadow_scores"),
    ("ulira", 1, jnp.full((4, 6), jnp.nan), ValueError, "unlearned_scores"),
    ("rmia", 2, jnp.full(5, 2.0), ValueError, "population_target_probs"),
    ("rmia", 1, jnp.full((3, 6), -0.5), ValueError, "reference_probs"),
]


@pytest.mark.parametrize("name, index, bad, exc, match", BAD_CLOSED)
def test_value_checks_run_on_closed_over_arrays_under_jit(name, index, bad, exc, match):
    fn, args = CASES[name]
    args = list(args)
    args[index] = bad
    others = tuple(i for i in range(len(args)) if i != index)
    with pytest.raises(exc, match=match):
        fn(*args)  # eager
    with pytest.raises(exc, match=match):
        _jit_with_closed(fn, args, closed=(index,))
    # passed as a tracer, the value is unknown: no error, no Python bool
    _jit_with_closed(fn, args, closed=others)


@pytest.mark.parametrize(
    "name, index, bad, match",
    [
        ("logit_confidence", 1, jnp.zeros((6, 1), jnp.int32), "labels"),
        ("logit_confidence", 1, jnp.zeros(6, jnp.float32), "labels"),
        ("lira", 1, jnp.zeros((8, 5)), "shadow_scores"),
        ("lira", 2, jnp.zeros((8, 6), jnp.int32), "shadow_in"),
        ("ulira", 2, jnp.zeros((4, 5)), "retrained_scores"),
        ("rmia", 3, jnp.zeros((2, 5)), "population_reference_probs"),
    ],
)
def test_shape_and_dtype_checks_run_at_trace_time(name, index, bad, match):
    fn, args = CASES[name]
    args = list(args)
    args[index] = bad
    with pytest.raises((ValueError, TypeError), match=match):
        _jit_with_closed(fn, args, closed=())


@pytest.mark.parametrize("name", ["logit_confidence", "logit_confidence_from_probs"])
def test_vmap_over_single_rows(name):
    fn, (x, labels) = CASES[name]
    batched = jax.jit(jax.vmap(fn))(x, labels)
    loop = jnp.stack([fn(x[i], labels[i]) for i in range(len(labels))])
    np.testing.assert_allclose(batched, loop, rtol=1e-6)
