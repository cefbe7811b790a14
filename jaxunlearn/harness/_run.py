"""A run directory: config, manifest, metrics, finished rows, results, report.

Every experiment driver and ``jaxunlearn compare`` write through :class:`RunDir`.
The resume rule exists once, here: a row's key is the hash of everything that
affects that row (the ``fields`` the driver passes: its config fields, seed,
model / split / data hashes) plus the package versions, and never the lists
being looped over, so adding a seed recomputes nothing already finished while
changing e.g. ``batch_size`` invalidates every row that depends on it.
"""

import dataclasses
import json
import os
import platform
import re
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax

from jaxunlearn import cache

_NAME = re.compile(r"^[A-Za-z0-9_.=+-]+$")


def to_json(obj: Any) -> Any:
    """A JSON-compatible copy of ``obj`` (dataclasses become dicts, tuples lists).

    Examples:
      >>> import dataclasses
      >>> @dataclasses.dataclass
      ... class C:
      ...     seeds: tuple = (0, 1)
      >>> to_json(C())
      {'seeds': [0, 1]}
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    return json.loads(json.dumps(obj, sort_keys=True, default=cache._json_default))


def device_info() -> dict[str, Any]:
    """Backend, devices, platform and Python version of this process."""
    return {
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


class RunDir:
    """Owns one run directory ``workdir``.

    Files: ``config.json`` (written on construction), ``manifest.json``,
    ``metrics.jsonl`` (one line per logged record, tagged with its row name),
    ``results.json``, ``report.md``, plots, and ``rows/<name>.json`` (a
    finished row with its key) plus ``rows/<key>.msgpack`` for saved variables.
    Every file is written atomically. A row file that is unreadable (truncated,
    corrupt) is reported with a warning, deleted and recomputed.

    Args:
      workdir: the directory (created if missing).
      config: the run's config (a dataclass or a JSON-able mapping).
      extra_versions: versions of further packages that change rows (e.g.
        scikit-learn); they join :func:`jaxunlearn.cache.versions` in every
        row key and in the manifest.

    Examples:
      >>> import tempfile
      >>> run = RunDir(tempfile.mkdtemp(), {"batch_size": 64, "seeds": [0, 1]})
      >>> calls = []
      >>> def compute(seed):
      ...     calls.append(seed)
      ...     return {"seed": seed, "acc": 0.5 + seed}
      >>> rows = [run.row(f"seed{s}", run.fields(exclude=("seeds",), seed=s),
      ...                 lambda s=s: compute(s)) for s in (0, 1)]
      >>> again = [run.row(f"seed{s}", run.fields(exclude=("seeds",), seed=s),
      ...                  lambda s=s: compute(s)) for s in (0, 1)]
      >>> calls, again == rows, run.resumed
      ([0, 1], True, ['seed0', 'seed1'])
    """

    def __init__(
        self,
        workdir: str,
        config: Any,
        *,
        extra_versions: Mapping[str, str] | None = None,
    ):
        self.workdir = str(workdir)
        self.rows_dir = os.path.join(self.workdir, "rows")
        os.makedirs(self.rows_dir, exist_ok=True)
        self.config = to_json(config)
        self.versions = {**cache.versions(), **dict(extra_versions or {})}
        self.resumed: list[str] = []
        self.computed: list[str] = []
        cache.atomic_write_json(self.path("config.json"), self.config)

    # ------------------------------------------------------------------ paths
    def path(self, *parts: str) -> str:
        """A path inside the run directory."""
        return os.path.join(self.workdir, *parts)

    def _row_path(self, name: str) -> str:
        if not _NAME.match(name):
            raise ValueError(
                f"row name {name!r} must match {_NAME.pattern} (it is a file name)."
            )
        return os.path.join(self.rows_dir, f"{name}.json")

    # ------------------------------------------------------------------- rows
    def fields(self, *, exclude: Iterable[str] = (), **extra: Any) -> dict[str, Any]:
        """The config's fields minus ``exclude`` (the looped lists) plus ``extra``.

        The usual argument of :meth:`row_key` / :meth:`row`.
        """
        drop = set(exclude)
        out = {k: v for k, v in self.config.items() if k not in drop}
        out.update(to_json(extra))
        return out

    def row_key(self, fields: Mapping[str, Any]) -> str:
        """Hash of ``fields`` and the package versions: the ONE resume key."""
        return cache.manifest_hash(
            {"fields": to_json(fields), "versions": self.versions}
        )

    def load_row(self, name: str, key: str) -> Any | None:
        """The finished row ``name`` if its key is ``key``, else ``None``.

        A stale row (other key) is left in place to be overwritten; an
        unreadable one is deleted with a warning.
        """
        path = self._row_path(name)
        if not os.path.exists(path):
            return None
        try:
            with open(path) as f:
                saved = json.load(f)
            if (
                not isinstance(saved, dict)
                or "row_key" not in saved
                or "row" not in saved
            ):
                raise ValueError("not a row file")
        except (OSError, ValueError) as e:
            warnings.warn(f"discarding unreadable row {path}: {e}", stacklevel=2)
            os.unlink(path)
            return None
        if saved["row_key"] != key:
            return None
        return saved["row"]

    def save_row(
        self,
        name: str,
        key: str,
        row: Any,
        *,
        fields: Mapping[str, Any] | None = None,
        variables: Any = None,
    ) -> None:
        """Writes a finished row (and optionally model variables) atomically.

        Variables are written first, so a row file always has its variables.
        """
        if variables is not None:
            cache.save(self.rows_dir, {"row_key": key}, variables)
        record = {"row_key": key, "row": row}
        if fields is not None:
            record["fields"] = to_json(fields)
        cache.atomic_write_json(self._row_path(name), record)

    def load_variables(self, key: str, like: Any = None) -> Any | None:
        """Variables saved with the row of ``key`` (``None`` if absent / corrupt)."""
        return cache.load(self.rows_dir, {"row_key": key}, like=like)

    def row(
        self, name: str, fields: Mapping[str, Any], compute: Callable[[], Any]
    ) -> Any:
        """Returns the finished row ``name`` for ``fields``, computing it if needed.

        On a miss the row's old lines in ``metrics.jsonl`` are dropped (so an
        interrupted attempt leaves no duplicates), ``compute()`` runs and its
        JSON-able result is saved. Names land in :attr:`resumed` or
        :attr:`computed`.
        """
        key = self.row_key(fields)
        saved = self.load_row(name, key)
        if saved is not None:
            self.resumed.append(name)
            return saved
        self.reset_metrics(name)
        value = to_json(compute())
        self.save_row(name, key, value, fields=fields)
        self.computed.append(name)
        return value

    # ---------------------------------------------------------------- metrics
    def log_metrics(self, name: str, record: Mapping[str, Any]) -> None:
        """Appends ``{"row": name, **record}`` to ``metrics.jsonl``."""
        line = json.dumps({"row": name, **to_json(record)}, sort_keys=True)
        with open(self.path("metrics.jsonl"), "a") as f:
            f.write(line + "\n")

    def reset_metrics(self, name: str) -> None:
        """Drops the lines of row ``name`` from ``metrics.jsonl`` (atomically)."""
        path = self.path("metrics.jsonl")
        if not os.path.exists(path):
            return
        with open(path) as f:
            lines = f.readlines()
        kept = []
        for line in lines:
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line cut by an interruption
            if isinstance(rec, dict) and rec.get("row") != name:
                kept.append(line if line.endswith("\n") else line + "\n")
        if len(kept) != len(lines):
            cache.atomic_write_bytes(path, "".join(kept).encode())

    def read_metrics(self, name: str | None = None) -> list[dict[str, Any]]:
        """The records of ``metrics.jsonl`` (of row ``name`` only, if given)."""
        path = self.path("metrics.jsonl")
        if not os.path.exists(path):
            return []
        out = []
        with open(path) as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if name is None or rec.get("row") == name:
                    out.append(rec)
        return out

    # ---------------------------------------------------------------- outputs
    def write_manifest(self, manifest: Mapping[str, Any] | None = None) -> dict:
        """Writes ``manifest.json``: config hash, versions, device, ``manifest``."""
        out = {
            "config_hash": cache.manifest_hash(self.config),
            "versions": dict(self.versions),
            "device": device_info(),
            **to_json(dict(manifest or {})),
        }
        cache.atomic_write_json(self.path("manifest.json"), out)
        return out

    def write_results(self, results: Mapping[str, Any]) -> None:
        """Writes ``results.json`` atomically."""
        cache.atomic_write_json(self.path("results.json"), dict(results))

    def read_results(self) -> dict[str, Any]:
        """The saved ``results.json``."""
        with open(self.path("results.json")) as f:
            return json.load(f)

    def write_report(self, lines: str | Iterable[str]) -> str:
        """Writes ``report.md`` (a string or lines) atomically; returns the text."""
        text = lines if isinstance(lines, str) else "\n".join(lines)
        if not text.endswith("\n"):
            text += "\n"
        cache.atomic_write_bytes(self.path("report.md"), text.encode())
        return text
