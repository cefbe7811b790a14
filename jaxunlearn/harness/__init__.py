"""Run handling shared by ``jaxunlearn compare`` and every experiment driver.

* :class:`RunDir`: one run directory (config, manifest, metrics.jsonl, rows with
  ONE resume rule, results, report).
* :class:`Claim` / :func:`render_claims`: paper claims as records.
* :func:`finish` / :func:`driver_main`: the results record every driver ends
  with, and every driver's command line (one-line errors, exit status 2).
* :func:`fmt`, :func:`table`, :func:`row_flag`: the one number formatter, the
  Markdown table renderer, and the diverged / collapsed row flags.

The harness may import ``train``, ``methods``, ``eval``, ``data`` and ``cache``;
none of those imports the harness.
"""

from jaxunlearn.harness._claims import Claim, render_claims
from jaxunlearn.harness._driver import (
    UsageError,
    config_from_json,
    driver_main,
    finish,
    load_config,
    parse_ints,
)
from jaxunlearn.harness._run import RunDir, device_info, to_json
from jaxunlearn.harness._tables import fmt, row_flag, table

__all__ = [
    "config_from_json",
    "load_config",
    "Claim",
    "UsageError",
    "driver_main",
    "finish",
    "parse_ints",
    "RunDir",
    "device_info",
    "fmt",
    "render_claims",
    "row_flag",
    "table",
    "to_json",
]
