"""The ``jaxunlearn`` command: the main job.

``jaxunlearn compare`` trains (or loads from cache) the original and the
retrained model, runs the chosen unlearning methods, evaluates every model with
the metrics of the four papers (accuracies, DLFD's loss attack and NoMUS, the
loss-threshold ROC, UTV, SalUn/RWFT's SVC attack, MIA-NN, the Blend code's
phi-LR score, and LiRA / RMIA with vectorised shadow models) and writes
``config.json``, ``manifest.json``, ``metrics.jsonl``, ``results.json``,
``report.md`` and plots to a workdir. With several seeds, every number is
reported as mean +- std with a bootstrap confidence interval. Finished
(seed, method) pairs are kept in ``workdir/rows/`` so an interrupted run
resumes where it stopped (the harness's one resume rule; see
:mod:`jaxunlearn.harness`).

Example::

    jaxunlearn compare --dataset digits --model mlp --forget-classes 3
"""

import argparse
import json
import os
import sys
import time

import jax
import numpy as np

from jaxunlearn import cache, data, methods, models, train
from jaxunlearn import eval as ev

# The main job lives in the run harness; these are the CLI's public names.
from jaxunlearn.harness._compare import (  # noqa: F401
    DEFAULT_METRICS,
    DEFAULT_RECIPES,
    TABLE,
    TUNE_FACTORS,
    CompareConfig,
    _build_method,
    compare,
    rows_table,
    tune,
)


def _version() -> str:
    """The installed distribution's version, else the package's ``__version__``."""
    from importlib import metadata

    try:
        return metadata.version("jaxunlearn")
    except metadata.PackageNotFoundError:
        import jaxunlearn

        return jaxunlearn.__version__


class UsageError(ValueError):
    """A mistake on the command line; ``main`` prints it as one line, exit 2."""

    def __init__(self, option: str, message: str):
        self.option = option
        super().__init__(f"argument {option}: {' '.join(str(message).split())}")


class _Parser(argparse.ArgumentParser):
    """Reports every parse error as one line on stderr and exits with status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


def _ints(text: str, what: str) -> tuple[int, ...]:
    parts = [t.strip() for t in text.split(",") if t.strip()]
    try:
        values = tuple(int(t) for t in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated {what}, e.g. 0,3; got {text!r}"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected at least one {what[:-1]}")
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"{what} must be >= 0, got {text!r}")
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"{what} repeat a value: {text!r}")
    return values


def _parse_classes(text: str) -> tuple[int, ...]:
    return _ints(text, "class labels")


def _parse_seeds(text: str) -> tuple[int, ...]:
    return _ints(text, "seeds")


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected an integer >= {low}, got {text!r}"
            ) from None
        if v < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {v}")
        return v

    return parse


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a finite number > 0, got {text!r}"
        ) from None
    if not (np.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return v


def _open_fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not 0 < v < 1:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1), got {text!r}")
    return v


def _check_dir_option(option: str, path: str) -> None:
    """``path`` is a directory, or can be created as one; else a UsageError."""
    if not path:
        raise UsageError(option, "must not be empty")
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(option, f"{path!r} exists and is not a directory")
    parent = os.path.abspath(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UsageError(option, f"cannot create {path!r}: {parent!r} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(
            option, f"cannot create or write {path!r}: {parent!r} is not writable"
        )


def _library_check(option: str, fn, *args, **kwargs):
    """Calls library validation; its ValueError / TypeError becomes a UsageError."""
    try:
        return fn(*args, **kwargs)
    except (ValueError, TypeError) as e:
        raise UsageError(option, str(e)) from e


def validate_args(args: argparse.Namespace) -> tuple[CompareConfig, str | None]:
    """``(config, cache_dir)`` of a checked ``compare`` command line."""
    cfg, cache_dir, _ = _validate(args)
    return cfg, cache_dir


def _validate(args: argparse.Namespace):
    """Checks a parsed ``compare`` command line before anything trains.

    Resolves ``--methods``, ``--metrics`` and ``--method-config``, checks the
    workdir and cache paths, loads the data set, builds the split of the first
    seed and the model, and builds every selected method with
    :func:`jaxunlearn.methods.get` from its recipe (so a misspelt
    hyperparameter fails here, not after training).

    Returns:
        The :class:`CompareConfig` and the cache directory (None: no cache).

    Raises:
        UsageError: naming the option at fault and the valid choices.
    """
    valid_methods = methods.names()
    if args.methods.strip() == "all":
        names = tuple(
            n
            for n in valid_methods
            if n != "retrain"
            and (args.mode == "class" or not methods.needs_forget_classes(n))
        )
    else:
        names = tuple(n.strip() for n in args.methods.split(",") if n.strip())
        unknown = [n for n in names if n not in valid_methods]
        if unknown:
            raise UsageError(
                "--methods",
                f"unknown method(s) {unknown}; valid: 'all' or a comma-separated"
                f" list of {list(valid_methods)}",
            )
        if not names:
            raise UsageError(
                "--methods",
                f"no method named; valid: 'all' or"
                f" a comma-separated list of {list(valid_methods)}",
            )
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise UsageError("--methods", f"method(s) {dup} named more than once")
        if args.mode != "class":
            class_only = [n for n in names if methods.needs_forget_classes(n)]
            if class_only:
                raise UsageError(
                    "--methods",
                    f"{class_only} forget whole classes and need --mode class"
                    f" (got --mode {args.mode})",
                )

    tuning = args.command == "tune" or getattr(args, "tune", False)
    if args.command == "tune":  # a sweep evaluates nothing beyond its rule
        args.metrics, args.shadow_models = "accuracy", 0
    elif not args.tune:
        for option in ("grid", "select"):
            if getattr(args, option) is not None:
                raise UsageError(f"--{option}", "applies only with --tune")
    valid_metrics = ev.metric_names()
    metrics_given = args.metrics is not None
    metric_list = (
        tuple(m.strip() for m in args.metrics.split(",") if m.strip())
        if metrics_given
        else DEFAULT_METRICS
    )
    bad = [m for m in metric_list if m not in valid_metrics]
    if bad or not metric_list:
        what = f"unknown metric(s) {bad}" if bad else "no metric named"
        raise UsageError(
            "--metrics",
            f"{what}; valid: a comma-separated list of {list(valid_metrics)}",
        )
    shadow_metrics = [m for m in metric_list if m in ("lira", "rmia")]
    if (
        shadow_metrics
        and args.shadow_models < 2
        and (metrics_given or args.shadow_models == 1)
    ):
        raise UsageError(
            "--shadow-models",
            f"{shadow_metrics} need at least 2 shadow models, got"
            f" {args.shadow_models}; pass >= 2, or 0 without them in --metrics",
        )

    recipes = {k: dict(v) for k, v in DEFAULT_RECIPES.items()}
    configured: set[str] = set()
    if args.method_config is not None:
        try:
            overrides = json.loads(args.method_config)
        except json.JSONDecodeError as e:
            raise UsageError("--method-config", f"invalid JSON: {e}") from None
        if not isinstance(overrides, dict) or not all(
            isinstance(v, dict) for v in overrides.values()
        ):
            raise UsageError(
                "--method-config",
                'expected a JSON object of objects, e.g. \'{"neggrad":'
                ' {"learning_rate": 0.02}}\'',
            )
        for k, v in overrides.items():
            if k not in valid_methods:
                raise UsageError(
                    "--method-config",
                    f"unknown method {k!r}; valid: {list(valid_methods)}",
                )
            if k not in names:
                raise UsageError(
                    "--method-config",
                    f"configures {k!r}, which --methods does not select"
                    f" (selected: {list(names)})",
                )
            recipes.setdefault(k, {}).update(v)
            configured.add(k)
    if args.unlearn_epochs is not None:
        for n in names:
            recipes.setdefault(n, {})["epochs"] = args.unlearn_epochs
    for n in names:
        epochs = recipes.get(n, {}).get("epochs", 1)
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise UsageError(
                "--method-config",
                f"{n}: 'epochs' must be an integer >= 1, got {epochs!r}",
            )

    if args.mode != "class" and args.forget_classes is not None:
        raise UsageError(
            "--forget-classes", f"applies only to --mode class (got --mode {args.mode})"
        )
    if args.data_dir is not None and "://" not in args.data_dir:
        if not os.path.isdir(args.data_dir):
            raise UsageError("--data-dir", f"{args.data_dir!r} is not a directory")
    _check_dir_option("--workdir", args.workdir)
    cache_dir = None if args.cache_dir.lower() == "none" else args.cache_dir
    if cache_dir is not None:
        _check_dir_option("--cache-dir", cache_dir)
    if args.num_devices > 1 and args.num_devices > len(jax.devices()):
        raise UsageError(
            "--num-devices",
            f"{args.num_devices} requested but {len(jax.devices())} device(s) are"
            f" available ({jax.default_backend()})",
        )

    # A grid given once (shared_grid) applies where its names are sweepable.
    grids, shared_grid = _parse_grid(args.grid, names) if tuning else ({}, None)
    d = CompareConfig()
    cfg = CompareConfig(
        dataset=args.dataset,
        data_dir=args.data_dir,
        model=args.model,
        mode=args.mode,
        forget_classes=(
            args.forget_classes if args.forget_classes is not None else d.forget_classes
        ),
        forget_fraction=args.forget_fraction,
        methods=names,
        seeds=args.seeds,
        training=_library_check(
            "--lr",
            train.TrainConfig,
            epochs=args.epochs,
            batch_size=args.batch_size,
            learning_rate=args.lr,
        ),
        recipes=recipes,
        metrics=metric_list,
        shadow_models=args.shadow_models,
        num_devices=args.num_devices,
        standardize=args.standardize,
        tune=bool(tuning),
        tune_grids=dict(grids),
        tune_select=_parse_select(args.select)
        if tuning
        else CompareConfig().tune_select,
    )

    try:
        ds = data.load(cfg.dataset, data_dir=cfg.data_dir, standardize=cfg.standardize)
    except (ValueError, TypeError, OSError, ImportError) as e:
        raise UsageError("--dataset", f"cannot load {cfg.dataset!r}: {e}") from e
    if cfg.mode == "class":
        split = _library_check(
            "--forget-classes",
            data.split,
            ds,
            "class",
            seed=cfg.seeds[0],
            forget_classes=list(cfg.forget_classes),
        )
    else:  # group mode clusters; a random split of the same size is enough here
        split = _library_check(
            "--forget-fraction",
            data.random_split,
            ds,
            cfg.forget_fraction,
            seed=cfg.seeds[0],
        )
    model = _library_check("--model", models.get_model, cfg.model, split.num_classes)
    example = split.retain["image"][:1]
    variables = models.init(model, jax.random.key(0), example) if tuning else None
    built = {}
    for n in names:
        recipe = {k: v for k, v in recipes.get(n, {}).items() if k != "epochs"}
        method = _library_check(
            "--method-config" if n in configured else "--methods",
            _build_method,
            n,
            recipe,
            split,
            model,
        )
        built[n] = method
        if n in cfg.tune_grids:
            sweepable = train.sweepable(method, variables)
            unknown = sorted(set(cfg.tune_grids[n]) - set(sweepable))
            if unknown and shared_grid:  # this method keeps its default grid
                del cfg.tune_grids[n]
            elif unknown:
                raise UsageError(
                    "--grid",
                    f"{n}: {unknown} are not sweepable hyperparameters; {n} has"
                    f" {sweepable}",
                )
    if shared_grid and not cfg.tune_grids:
        have = {n: train.sweepable(built[n], variables) for n in names}
        raise UsageError(
            "--grid",
            f"no selected method can sweep all of {sorted(shared_grid)}; sweepable:"
            f" {have}",
        )
    return cfg, cache_dir, ds


def _parse_grid(text: str | None, names):
    """``--grid`` JSON -> ``({method: {hparam: [values]}}, shared)`` (checked).

    ``shared`` is the grid when one was given for every method, else None.
    """
    if text is None:
        return {}, None
    try:
        grid = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError("--grid", f"invalid JSON: {e}") from None
    if not isinstance(grid, dict) or not grid:
        raise UsageError(
            "--grid", "expected a JSON object, e.g. '{\"learning_rate\": [0.01, 0.1]}'"
        )
    if all(k in names for k in grid):  # per method
        per = grid
        if not all(isinstance(v, dict) for v in per.values()):
            raise UsageError("--grid", "per-method grids must be JSON objects")
    elif any(k in methods.names() for k in grid):
        bad = [k for k in grid if k in methods.names() and k not in names]
        if bad:
            raise UsageError(
                "--grid", f"grids for {bad}, which --methods does not select"
            )
        raise UsageError(
            "--grid",
            "give either one grid {hparam: [values]} for every method or"
            " {method: {hparam: [values]}}, not both",
        )
    else:
        per = {n: grid for n in names}
    for g in per.values():
        _library_check("--grid", train.grid_points, g)
    parsed = {
        k: {h: [float(x) for x in v] for h, v in g.items()} for k, g in per.items()
    }
    shared = None if per is grid else next(iter(parsed.values()))
    return parsed, shared


def _parse_select(text: str | None) -> dict[str, float]:
    """``--select`` JSON -> selection-rule weights (checked)."""
    if text is None:
        return CompareConfig().tune_select
    try:
        weights = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError("--select", f"invalid JSON: {e}") from None
    rule = _library_check("--select", train.SelectionRule, weights=weights)
    return {k: float(v) for k, v in rule.weights.items()}


def _add_job_args(c: argparse.ArgumentParser) -> None:
    """Arguments shared by ``compare`` and ``tune`` (data, model, recipes)."""
    d = CompareConfig()
    c.add_argument(
        "--dataset",
        default=d.dataset,
        help="digits | fashion_mnist | idx:DIR | npz:PATH | tfds:NAME | one of"
        " cifar10, cifar100, emnist, kmnist, mnist, svhn_cropped"
        " (default: %(default)s)",
    )
    c.add_argument(
        "--data-dir",
        default=None,
        help="directory holding the data set's files (fashion_mnist IDX files,"
        " prepared TFDS data); default: the source's own location",
    )
    c.add_argument(
        "--model",
        default=d.model,
        choices=models.names(),
        help="network to train (default: %(default)s)",
    )
    c.add_argument(
        "--mode",
        default=d.mode,
        choices=("class", "random", "group"),
        help="what to forget: whole classes, a random fraction of the training"
        " examples, or clustered groups (default: %(default)s)",
    )
    c.add_argument(
        "--forget-classes",
        type=_parse_classes,
        default=None,
        help="comma-separated class labels to forget, --mode class only"
        f" (default: {','.join(map(str, d.forget_classes))})",
    )
    c.add_argument(
        "--forget-fraction",
        type=_open_fraction,
        default=d.forget_fraction,
        help="fraction in (0, 1) of the training examples (random) or groups"
        " (group) to forget (default: %(default)s)",
    )
    c.add_argument(
        "--methods",
        default="all",
        help="comma-separated method names or 'all' (default; the class-only"
        f" methods need --mode class); from {list(methods.names())}",
    )
    c.add_argument(
        "--seeds",
        type=_parse_seeds,
        default=d.seeds,
        help="comma-separated seeds >= 0; several give mean ± std (default: 0)",
    )
    c.add_argument(
        "--epochs",
        type=_int_at_least(1),
        default=d.training.epochs,
        help="epochs of the original / retrained model (default: %(default)s)",
    )
    c.add_argument(
        "--batch-size",
        type=_int_at_least(1),
        default=d.training.batch_size,
        help="batch size of the original / retrained model (default: %(default)s)",
    )
    c.add_argument(
        "--lr",
        type=_positive_float,
        default=d.training.learning_rate,
        help="learning rate of the original / retrained model (default: %(default)s)",
    )
    c.add_argument(
        "--unlearn-epochs",
        type=_int_at_least(1),
        default=None,
        help="override every method's epochs",
    )
    c.add_argument(
        "--method-config",
        default=None,
        help="JSON overrides of the selected methods' recipes, e.g."
        ' \'{"neggrad": {"learning_rate": 0.02}}\'',
    )
    c.add_argument(
        "--num-devices",
        type=_int_at_least(1),
        default=1,
        help="devices to shard batches over (default: %(default)s)",
    )
    c.add_argument(
        "--standardize",
        action="store_true",
        help="standardise images per channel with train-set statistics",
    )
    c.add_argument(
        "--workdir",
        default=f"runs/{c.prog.split()[-1]}",
        help="output directory (compare: finished rows there are resumed;"
        " default: %(default)s)",
    )
    c.add_argument(
        "--cache-dir",
        default=".cache/jaxunlearn",
        help="model cache; 'none' disables it (default: %(default)s)",
    )
    c.add_argument(
        "--no-progress", action="store_true", help="do not show progress bars"
    )
    c.add_argument(
        "--no-compilation-cache",
        action="store_true",
        help="do not keep compiled XLA programs in <cache-dir>/xla (on by"
        " default, so a rerun skips compilation; also"
        f" {cache.NO_COMPILATION_CACHE_ENV}=1)",
    )


def _add_tune_args(c: argparse.ArgumentParser, *, flag: bool) -> None:
    """The sweep options of ``tune`` (and of ``compare --tune``)."""
    if flag:
        c.add_argument(
            "--tune",
            action="store_true",
            help="choose each method's hyperparameters first by a vmapped sweep"
            " against the retrained model on the val split (see `tune`)",
        )
    c.add_argument(
        "--grid",
        default=None,
        help="JSON grid: {hparam: [values]} for every selected method, or"
        " {method: {hparam: [values]}}; default: the recipe's learning rate"
        f" times {list(TUNE_FACTORS)}",
    )
    c.add_argument(
        "--select",
        default=None,
        help="JSON weights of the selection rule's gaps to the retrained model,"
        ' e.g. \'{"forget": 1, "privacy": 2}\' (terms: retain, forget,'
        " heldout, privacy; default: all 1)",
    )


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="jaxunlearn", description=__doc__.split("\n")[0])
    p.add_argument(
        "--version",
        action="version",
        version=f"%(prog)s {_version()}",
        help="print the version and exit",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    c = sub.add_parser(
        "compare",
        help="train, unlearn with several methods, evaluate",
        description=__doc__.split("\n\n")[1].replace("\n", " "),
    )
    _add_job_args(c)
    d = CompareConfig()
    c.add_argument(
        "--metrics",
        default=None,
        help=f"comma-separated, from {list(ev.metric_names())} (default: all of them)"
        if set(d.metrics) == set(ev.metric_names())
        else f"comma-separated, from {list(ev.metric_names())}"
        f" (default: {','.join(d.metrics)})",
    )
    c.add_argument(
        "--shadow-models",
        type=_int_at_least(0),
        default=d.shadow_models,
        help="shadow models for LiRA / RMIA: >= 2, or 0 to disable them"
        " (default: %(default)s)",
    )
    c.add_argument("--no-plots", action="store_true", help="do not draw the figures")
    _add_tune_args(c, flag=True)
    t = sub.add_parser(
        "tune",
        help="sweep each method's hyperparameters as one vmapped program and"
        " select against the retrained model",
        description="Trains (or loads) the original and retrained models, runs"
        " every point of each method's grid as one vmapped program, scores each"
        " against the retrained model on the val split (never the test split)"
        " by a declared rule, and writes tune.json (every point, the winners)"
        " and report.md.",
    )
    _add_job_args(t)
    _add_tune_args(t, flag=False)
    return p


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit status.

    A user error (bad option value, unknown name, unusable path) prints one
    line to stderr and returns 2 before anything trains.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a one-line parse error
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    try:
        cfg, cache_dir, ds = _validate(args)
    except UsageError as e:
        print(f"{parser.prog} {args.command}: error: {e}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    if not (
        args.no_compilation_cache
        or cache_dir is None
        or cache.compilation_cache_disabled()
    ):
        cache.enable_compilation_cache(os.path.join(cache_dir, "xla"))
    if args.command == "tune":
        record = tune(
            cfg,
            args.workdir,
            cache_dir=cache_dir,
            progress=not args.no_progress,
            dataset=ds,
        )
        print(record["table"])
        print(
            f"\nselected: {json.dumps(record['selected'])}\nwrote"
            f" {args.workdir}/{{tune.json,report.md}}"
            f" ({time.perf_counter() - t0:.1f}s)"
        )
        return 0
    results = compare(
        cfg,
        args.workdir,
        cache_dir=cache_dir,
        progress=not args.no_progress,
        plots=not args.no_plots,
        dataset=ds,
    )
    print(results["table"])
    print(
        f"\nwrote {args.workdir}/{{config,manifest,results}}.json, report.md"
        f" ({time.perf_counter() - t0:.1f}s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
