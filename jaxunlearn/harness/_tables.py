"""Number formatting, row flags and Markdown tables: the one copy for all drivers."""

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

FLAG_KEY = "flag"


def fmt(value: Any, spec: str = ".4f", *, scale: float = 1.0, suffix: str = "") -> str:
    """Formats one table cell.

    ``None`` is ``-``; a number is ``format(value * scale, spec) + suffix``
    (``nan`` / ``inf`` are written as such); an aggregate over seeds
    (``{"mean", "std", "n"}``, as from ``eval.aggregate``) is ``mean ± std``,
    or the mean alone when ``n < 2`` or the std is not finite; a bool is
    ``yes`` / ``no``; anything else is ``str(value)``.

    Examples:
      >>> fmt(0.12345), fmt(0.25, ".0f", scale=100, suffix="%"), fmt(None)
      ('0.1235', '25%', '-')
      >>> fmt({"mean": 0.5, "std": 0.1, "n": 3}, ".2f")
      '0.50 ± 0.10'
      >>> fmt(float("nan")), fmt(True), fmt(3, "d")
      ('nan', 'yes', '3')
    """
    if value is None:
        return "-"
    if isinstance(value, Mapping) and "mean" in value:
        mean = fmt(value["mean"], spec, scale=scale, suffix=suffix)
        std = value.get("std")
        n = value.get("n", 2)
        if n is not None and n > 1 and std is not None and np.isfinite(std):
            return f"{mean} ± {fmt(std, spec, scale=scale, suffix=suffix)}"
        return mean
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, numbers.Real | np.generic):
        if isinstance(value, numbers.Integral | np.integer) and scale == 1.0:
            if not spec.endswith(("f", "F", "e", "E", "g", "G", "%")):
                return format(int(value), spec) + suffix
        v = float(value) * scale
        if not math.isfinite(v):
            return str(v)
        return format(v, spec) + suffix
    return str(value)


def row_flag(
    values: Mapping[str, Any],
    *,
    keys: Sequence[str] | None = None,
    accuracy_key: str | None = None,
    chance: float | None = None,
    tolerance: float = 0.02,
) -> str | None:
    """``"diverged"``, ``"collapsed"`` or ``None`` for one result row.

    Diverged: ``values["diverged"]`` is true or any numeric value among
    ``keys`` (default: all) is not finite. Collapsed: ``values[accuracy_key]``
    is at most ``chance + tolerance`` (the model predicts no better than
    chance).

    Examples:
      >>> row_flag({"acc": float("nan")})
      'diverged'
      >>> row_flag({"acc": 0.1}, accuracy_key="acc", chance=0.1)
      'collapsed'
      >>> row_flag({"acc": 0.9}, accuracy_key="acc", chance=0.1) is None
      True
    """
    if values.get("diverged"):
        return "diverged"
    for k in keys if keys is not None else list(values):
        v = values.get(k)
        if isinstance(v, bool):
            continue
        if isinstance(v, numbers.Real | np.generic) and not np.isfinite(float(v)):
            return "diverged"
    if accuracy_key is not None and chance is not None:
        acc = values.get(accuracy_key)
        if acc is not None and float(acc) <= chance + tolerance:
            return "collapsed"
    return None


def table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[tuple],
    *,
    label: str = "method",
    label_title: str | None = None,
    drop_empty: bool = True,
) -> str:
    """A Markdown table; a row's ``flag`` is shown in bold beside its label.

    Args:
      rows: dicts with a ``label`` key and the column keys (plain numbers or
        aggregates over seeds).
      columns: ``(title, key)`` or ``(title, key, spec)`` or
        ``(title, key, spec, scale, suffix)`` per column (see :func:`fmt`).
      label: key of the first column.
      label_title: its title (default: ``label``).
      drop_empty: leave out columns that no row has.

    Examples:
      >>> print(table([{"method": "a", "acc": 0.5},
      ...              {"method": "b", "acc": float("nan"), "flag": "diverged"}],
      ...             [("ACC", "acc", ".2f")]))
      | method | ACC |
      |---|---|
      | a | 0.50 |
      | b **diverged** | nan |
    """
    cols = [c for c in columns if not drop_empty or any(c[1] in r for r in rows)]
    head = f"| {label_title or label} | " + " | ".join(c[0] for c in cols) + " |"
    lines = [head, "|---|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        name = str(r.get(label, ""))
        if r.get(FLAG_KEY):
            name += f" **{r[FLAG_KEY]}**"
        cells = []
        for c in cols:
            spec = c[2] if len(c) > 2 else ".4f"
            scale = c[3] if len(c) > 3 else 1.0
            suffix = c[4] if len(c) > 4 else ""
            cells.append(fmt(r.get(c[1]), spec, scale=scale, suffix=suffix))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
