"""A-AMU speed: one A-CF step against one CF step, the MMD term, and the
end-to-end estimate behind the paper's speed claim.

Usage::

    python experiments/bench_aamu.py --out experiments/results/bench_aamu_cpu.json
    python experiments/bench_aamu.py --quick --out /tmp/b.json

1. ``step``: ConvNet-3 (instance norm, width 32) on Fashion-MNIST 28x28,
   class 0 forgotten (forget set: its train images; unseen set: the test
   images, class-matched inside the step), one retain batch of 64 through
   ``finetune`` (CF: SGD, the reference fine-tune) and through ``a_cf``
   (A-CF: squared retain CE + lambda MMD^2 of a forget and an unseen sample
   of ``sample_factor * 64`` images each, Adam). ``sample_factor`` sweeps
   the A-CF step over 1, 2, 4 (the default) and 8. ``cf_same_grad_images``
   (reference only) is a CF step on 64 + 256 images, as many as A-CF
   backpropagates through, to tell compute from overhead.
2. ``mmd``: ``losses.gaussian_mmd2`` (value) and ``losses.aamu_loss`` (value
   and gradient with respect to the forget losses) on 1-D samples of n = 64
   .. 4096 per side.
3. ``end_to_end``: one A-CF epoch (the paper's recipe) against 50 CF epochs
   (the reference recipe) over the same retain set, *estimated* as measured
   per-step time x steps per epoch x epochs (no full epoch is run). The
   paper reports 7.6x at CIFAR-10 scale.

Compile time is reported separately from the steady-state run time (median
of repeated calls after a warm-up call, each synchronised with
``jax.block_until_ready``); every step is jitted once per case, and the step
cases are timed interleaved (round-robin), so that a change in the machine's
load hits them alike. The load average is recorded.
"""

import argparse
import json
import math
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn import cache, data, losses, methods, models

PAPER_SPEEDUP = 7.6
CF_EPOCHS = 50
ACF_EPOCHS = 1


def _summary(first, runs):
    run = statistics.median(runs)
    return {
        "compile_s": max(first - run, 0.0),
        "first_call_s": first,
        "run_s": run,
        "min_s": min(runs),
        "repeats": len(runs),
    }


def _call(fn, args):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t


def _time(fn, *args, repeats):
    first = _call(fn, args)
    return _summary(first, [_call(fn, args) for _ in range(repeats)])


def _time_interleaved(cases, repeats):
    """Times ``{name: (fn, args)}`` side by side: one warm-up (compiling)
    call each, then ``repeats`` rounds calling every case once, so that a
    change in machine load hits all cases alike."""
    first = {name: _call(fn, args) for name, (fn, args) in cases.items()}
    runs = {name: [] for name in cases}
    for _ in range(repeats):
        for name, (fn, args) in cases.items():
            runs[name].append(_call(fn, args))
    return {name: _summary(first[name], runs[name]) for name in cases}


def _split(dataset, forget_class):
    train, test = dataset["train"], dataset["test"]
    f = train["label"] == forget_class
    retain = {k: v[~f] for k, v in train.items()}
    forget = {k: v[f] for k, v in train.items()}
    return retain, forget, dict(test)


def bench_step(
    *,
    dataset,
    dataset_name,
    width,
    depth,
    batch_size,
    sample_factors,
    repeats,
    ref_factor=4,
    forget_class=0,
    reference=True,
):
    retain, forget, unseen = _split(dataset, forget_class)
    num_classes = dataset["num_classes"]
    model = models.get_model("convnet3", num_classes, width=width, depth=depth)
    apply_fn = models.make_apply_fn(model)
    batch = {
        "retain": {
            "image": jnp.asarray(retain["image"][:batch_size]),
            "label": jnp.asarray(retain["label"][:batch_size]),
            "mask": jnp.ones(batch_size, bool),
        }
    }
    v = models.init(model, jax.random.key(0), batch["retain"]["image"][:1])
    steps_per_epoch = math.ceil(len(retain["label"]) / batch_size)

    def case(m, b=batch):
        st = m.init(v, key=jax.random.key(1), num_steps=steps_per_epoch)
        return jax.jit(m.step), (st, b, jax.random.key(2))

    cf_method = methods.get("finetune", apply_fn=apply_fn, learning_rate=0.01)
    # reference: CF on as many images as A-CF backpropagates through
    # (retain batch + forget sample), to tell compute from overhead
    n_grad = batch_size + min(ref_factor * batch_size, len(forget["label"]))
    big = {
        "retain": {
            "image": jnp.asarray(retain["image"][:n_grad]),
            "label": jnp.asarray(retain["label"][:n_grad]),
            "mask": jnp.ones(n_grad, bool),
        }
    }
    cases = {"cf": case(cf_method)}
    if reference:
        cases["cf_same_grad_images"] = case(cf_method, big)
    factors = sorted(set(sample_factors) | {ref_factor})
    for f in factors:
        m = methods.get(
            "a_cf",
            apply_fn=apply_fn,
            forget_set=forget,
            unseen_set=unseen,
            sample_factor=f,
        )
        cases[f"a_cf_x{f}"] = case(m)
    timed = _time_interleaved(cases, repeats)
    cf = timed["cf"]
    sweep = {f: timed[f"a_cf_x{f}"] for f in factors}
    acf = sweep[ref_factor]
    ratio = acf["run_s"] / cf["run_s"]
    t_cf = cf["run_s"] * steps_per_epoch * CF_EPOCHS
    t_acf = acf["run_s"] * steps_per_epoch * ACF_EPOCHS
    step = {
        "dataset": dataset_name,
        "image": list(retain["image"].shape[1:]),
        "model": f"convnet3(width={width}, depth={depth}, instance norm)",
        "batch_size": batch_size,
        "forget_class": forget_class,
        "n_retain": int(len(retain["label"])),
        "n_forget": int(len(forget["label"])),
        "n_unseen": int(len(unseen["label"])),
        "n_unseen_class_matched": int(np.sum(unseen["label"] == forget_class)),
        "cf": {"method": "finetune (SGD, lr 0.01, momentum 0.9)", **cf},
        "a_cf": {
            "method": "a_cf (Adam 2.4e-4, lambda 34, k 2)",
            "sample_factor": ref_factor,
            "forget_sample": min(ref_factor * batch_size, len(forget["label"])),
            "unseen_sample": min(
                ref_factor * batch_size, int(np.sum(unseen["label"] == forget_class))
            ),
            **acf,
        },
        "a_cf_over_cf": ratio,
        "timing": "interleaved: one warm-up call per case, then rounds calling"
        " every case once; median of the rounds",
    }
    if reference:
        step["cf_same_grad_images"] = {
            "method": "finetune on one retain batch of batch_size + forget_sample"
            " images (the images A-CF backpropagates through; reference only)",
            "batch_size": n_grad,
            **timed["cf_same_grad_images"],
        }
    factor_rows = [
        {
            "sample_factor": f,
            "forget_sample": min(f * batch_size, len(forget["label"])),
            **t,
            "over_cf": t["run_s"] / cf["run_s"],
        }
        for f, t in sweep.items()
        if f in sample_factors
    ]
    end_to_end = {
        "estimated": True,
        "how": (
            "measured median step time x ceil(n_retain / batch_size) steps per"
            " epoch x epochs (no epoch was run; data loading excluded, the same"
            " retain set for both)"
        ),
        "steps_per_epoch": steps_per_epoch,
        "cf_epochs": CF_EPOCHS,
        "a_cf_epochs": ACF_EPOCHS,
        "cf_s": t_cf,
        "a_cf_s": t_acf,
        "speedup": t_cf / t_acf,
        "paper_speedup": PAPER_SPEEDUP,
        "paper_scale": "CIFAR-10",
    }
    return step, factor_rows, end_to_end


def bench_mmd(*, sizes, repeats):
    rng = np.random.default_rng(0)
    rows = []

    def aamu(f, u):
        return losses.aamu_loss(jnp.float32(1.0), f, u)[0]

    mmd = jax.jit(losses.gaussian_mmd2)
    aamu_vg = jax.jit(jax.value_and_grad(aamu))
    for n in sizes:
        x = jnp.asarray(rng.exponential(size=n).astype(np.float32))
        y = jnp.asarray(rng.exponential(1.5, size=n).astype(np.float32))
        rows.append(
            {
                "n": n,
                "gaussian_mmd2": _time(mmd, x, y, repeats=repeats),
                "aamu_loss_value_and_grad": _time(aamu_vg, x, y, repeats=repeats),
            }
        )
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="experiments/results/bench_aamu_cpu.json")
    p.add_argument("--quick", action="store_true", help="tiny sizes (seconds)")
    args = p.parse_args(argv)
    load_before = os.getloadavg()
    if args.quick:
        # one A-CF compile, a one-block ConvNet on 8x8 digits: seconds
        name, width, depth, batch_size = "digits", 4, 1, 8
        factors, ref_factor, repeats, sizes = (1,), 1, 1, (16,)
    else:
        name, width, depth, batch_size = "fashion_mnist", 32, 3, 64
        factors, ref_factor, repeats, sizes = (1, 2, 4, 8), 4, 7, (64, 256, 1024, 4096)
    dataset = data.load(name)
    step, factor_rows, e2e = bench_step(
        dataset=dataset,
        dataset_name=name,
        width=width,
        depth=depth,
        batch_size=batch_size,
        sample_factors=factors,
        ref_factor=ref_factor,
        repeats=repeats,
        reference=not args.quick,
    )
    mmd_rows = bench_mmd(sizes=sizes, repeats=repeats)
    res = {
        "benchmark": "bench_aamu",
        "quick": args.quick,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "versions": cache.versions(),
        "step": step,
        "sample_factor": factor_rows,
        "mmd": mmd_rows,
        "end_to_end": e2e,
        "loadavg_1_5_15_min": {
            "before": list(load_before),
            "after": list(os.getloadavg()),
        },
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    cache.atomic_write_json(args.out, res)
    print(
        f"CF step {1e3 * step['cf']['run_s']:.1f} ms (compile"
        f" {step['cf']['compile_s']:.2f} s), A-CF step"
        f" {1e3 * step['a_cf']['run_s']:.1f} ms (compile"
        f" {step['a_cf']['compile_s']:.2f} s): {step['a_cf_over_cf']:.2f}x"
    )
    ref = step.get("cf_same_grad_images")
    if ref:
        print(f"CF step on {ref['batch_size']} images {1e3 * ref['run_s']:.1f} ms")
    for r in factor_rows:
        print(
            f"A-CF sample_factor {r['sample_factor']}: {1e3 * r['run_s']:.1f} ms"
            f" ({r['over_cf']:.2f}x CF)"
        )
    for r in mmd_rows:
        print(
            f"n={r['n']:5d}: gaussian_mmd2 {1e3 * r['gaussian_mmd2']['run_s']:.3f}"
            f" ms, aamu_loss value+grad"
            f" {1e3 * r['aamu_loss_value_and_grad']['run_s']:.3f} ms"
        )
    print(json.dumps(e2e, indent=1))
    return res


if __name__ == "__main__":
    main()
