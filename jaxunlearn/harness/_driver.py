"""What every experiment driver shares besides its run directory: the results
record it ends with, and its command line (presets, overrides, one-line
errors with exit status 2, the claims summary)."""

import argparse
import dataclasses
import json
import os
import sys
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax

from jaxunlearn import cache
from jaxunlearn.harness._claims import Claim
from jaxunlearn.harness._run import RunDir


class UsageError(ValueError):
    """A setting given on the command line (or in a config) is invalid.

    Drivers raise it for bad overrides; :func:`driver_main` prints it as one
    ``error:`` line and exits with status 2.
    """


def parse_ints(text: str, option: str) -> tuple[int, ...]:
    """``"0,1,2" -> (0, 1, 2)``; a :class:`UsageError` naming ``--option``.

    >>> parse_ints("0,2", "seeds")
    (0, 2)
    """
    try:
        out = tuple(int(c) for c in text.split(","))
    except ValueError:
        raise UsageError(
            f"--{option} must be comma-separated integers, got {text!r}."
        ) from None
    return out


def config_from_json(cls: type, data: Mapping[str, Any]) -> Any:
    """Rebuilds the config dataclass ``cls`` from its ``config.json`` form.

    Keys ``cls`` does not have are dropped (a config written by an older
    driver still loads); tuple-typed fields come back as tuples and
    dataclass-typed fields (a ``train.TrainConfig``, a nested driver config)
    are rebuilt recursively.

    >>> @dataclasses.dataclass
    ... class C:
    ...     seeds: tuple[int, ...] = (0,)
    ...     name: str = "x"
    >>> config_from_json(C, {"seeds": [1, 2], "gone": 3})
    C(seeds=(1, 2), name='x')
    """
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value, kind = data[f.name], hints.get(f.name)
        if dataclasses.is_dataclass(kind) and isinstance(value, Mapping):
            value = config_from_json(kind, value)
        elif (kind is tuple or typing.get_origin(kind) is tuple) and isinstance(
            value, list
        ):
            value = tuple(value)
        out[f.name] = value
    return cls(**out)


def load_config(workdir: str, cls: type) -> Any:
    """The config of a finished run in ``workdir`` (for ``--report-only``).

    Raises:
      UsageError: the workdir has no ``config.json``.
    """
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise UsageError(f"{path} does not exist: run the experiment first.")
    with open(path) as f:
        return config_from_json(cls, json.load(f))


def finish(
    rd: RunDir,
    claims: Sequence[Claim],
    *,
    wall_time_s: float,
    paper: Any = None,
    manifest: Mapping[str, Any] | None = None,
    **parts: Any,
) -> dict[str, Any]:
    """Writes ``manifest.json`` and ``results.json``; returns the results.

    Every driver's results hold ``config``, its ``parts`` (rows, tables...),
    ``claims`` as records, ``paper``, which rows were computed or resumed,
    ``wall_time_s``, package ``versions`` and the ``backend``.
    """
    written = rd.write_manifest(
        {
            **dict(manifest or {}),
            "rows_computed": rd.computed,
            "rows_resumed": rd.resumed,
        }
    )
    results = {
        "config": rd.config,
        **parts,
        "claims": [c.to_json() for c in claims],
        "paper": paper,
        "rows_computed": list(rd.computed),
        "rows_resumed": list(rd.resumed),
        "wall_time_s": wall_time_s,
        "versions": written["versions"],
        "backend": jax.default_backend(),
    }
    rd.write_results(results)
    return results


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own errors: one line, status 2
        self.exit(2, f"error: {message}\n")


def _log(s: str) -> None:
    print(s, file=sys.stderr, flush=True)


def driver_main(
    argv: Sequence[str] | None,
    *,
    description: str,
    get_config: Callable[[str], Any],
    run: Callable[..., dict[str, Any]],
    presets: Sequence[str],
    workdir: str,
    int_overrides: Mapping[str, str] = {},  # noqa: B006 (read only)
    str_overrides: Mapping[str, str] = {},  # noqa: B006
    rebuild: Callable[[str], dict[str, Any]] | None = None,
    data_errors: tuple[type[BaseException], ...] = (),
) -> dict[str, Any]:
    """The command line of an experiment driver.

    ``--config`` picks a preset, ``--workdir`` the run directory; each
    ``int_overrides`` entry ``{"seeds": "seeds"}`` adds ``--seeds 0,1,2``
    setting that config field to a tuple of ints, each ``str_overrides`` entry
    a string field; with ``rebuild``, ``--report-only`` re-renders a finished
    run without training. Compiled programs are kept in JAX's persistent
    compilation cache (:func:`jaxunlearn.cache.enable_compilation_cache`), so a
    rerun skips compilation; ``--no-compilation-cache`` or
    ``JAXUNLEARN_NO_COMPILATION_CACHE=1`` turns that off. A
    :class:`UsageError`, a missing data set
    (``FileNotFoundError`` and ``data_errors``) or a bad option prints one
    ``error:`` line and exits with status 2; on success every claim is printed
    with its verdict.
    """
    p = _OneLineParser(description=description)
    p.add_argument("--config", default=presets[0], help=" | ".join(presets))
    p.add_argument("--workdir", default=workdir, help="the run directory")
    for flag, field in int_overrides.items():
        p.add_argument(
            f"--{flag}", default=None, help=f"comma-separated {field} (override)"
        )
    for flag, field in str_overrides.items():
        p.add_argument(f"--{flag}", default=None, help=f"{field} (override)")
    p.add_argument(
        "--no-compilation-cache",
        action="store_true",
        help="do not keep compiled programs on disk (default: keep them in"
        f" ${cache.CACHE_ENV}/xla or {cache.DEFAULT_CACHE_DIR}/xla; also"
        f" {cache.NO_COMPILATION_CACHE_ENV}=1)",
    )
    if rebuild is not None:
        p.add_argument(
            "--report-only",
            action="store_true",
            help="rebuild report.md / results.json from workdir/results.json",
        )
    args = p.parse_args(argv)
    if not (args.no_compilation_cache or cache.compilation_cache_disabled()):
        cache.enable_compilation_cache()
    try:
        if rebuild is not None and args.report_only:
            res = rebuild(args.workdir)
        else:
            if args.config not in presets:
                raise UsageError(
                    f"--config must be one of {', '.join(presets)},"
                    f" got {args.config!r}."
                )
            cfg = get_config(args.config)
            for flag, field in int_overrides.items():
                value = getattr(args, flag.replace("-", "_"))
                if value:
                    setattr(cfg, field, parse_ints(value, flag))
            for flag, field in str_overrides.items():
                value = getattr(args, flag.replace("-", "_"))
                if value:
                    setattr(cfg, field, value)
            res = run(cfg, args.workdir, log=_log)
    except (UsageError, FileNotFoundError, *data_errors) as e:
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(2)
    for c in res.get("claims", []):
        verdict = "n/a " if c["holds"] is None else ("PASS " if c["holds"] else "FAIL ")
        print(verdict + f"{c['id']}: {c['text']}")
    print(f"wrote {args.workdir}/results.json, report.md ({res['wall_time_s']:.0f}s)")
    return res
