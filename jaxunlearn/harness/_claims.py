"""Paper claims as records: checked by code, rendered into the report, never parsed."""

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from jaxunlearn.harness._tables import fmt


@dataclasses.dataclass
class Claim:
    """One claim of a paper that a run checks.

    Attributes:
      id: short stable identifier (``"frontier_closed_form"``).
      text: the claim in words.
      paper: the paper's value (number, string or None when it gives none).
      ours: our measured value.
      threshold: what ``ours`` is compared with, in words or as a number.
      holds: True / False, or None when the run could not check it.
      evidence: where the measurement lives (results.json keys, plots, rows).
    """

    id: str
    text: str
    paper: Any = None
    ours: Any = None
    threshold: Any = None
    holds: bool | None = None
    evidence: list[str] = dataclasses.field(default_factory=list)

    def __post_init__(self):
        if self.holds is not None:
            self.holds = bool(self.holds)

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict (the record stored in results.json)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Claim":
        """Inverse of :meth:`to_json`."""
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in fields})


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return fmt(v, ".4g")
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    return fmt(v).replace("|", "\\|")


def render_claims(claims: Sequence[Claim], *, details: bool = False) -> str:
    """Markdown table of claims (PASS / FAIL / n/a).

    With ``details=True`` the evidence column points below the table, where
    each claim's evidence lines follow as a list (for long measured evidence).

    Examples:
      >>> c = Claim("sel", "selective beats random", paper=18, ours=12.0,
      ...           threshold="< random", holds=True, evidence=["results.json"])
      >>> print(render_claims([c]))
      | claim | paper | ours | threshold | holds | evidence |
      |---|---|---|---|---|---|
      | sel: selective beats random | 18 | 12 | < random | PASS | results.json |
      >>> print(render_claims([c], details=True).splitlines()[-1])
      - sel: results.json
    """
    lines = [
        "| claim | paper | ours | threshold | holds | evidence |",
        "|---|---|---|---|---|---|",
    ]
    for c in claims:
        verdict = "n/a" if c.holds is None else ("PASS" if c.holds else "FAIL")
        text = str(c.text).replace("|", "\\|")
        where = ", ".join(c.evidence) or "-"
        if details:
            where = "below" if c.evidence else "-"
        lines.append(
            f"| {c.id}: {text} | {_cell(c.paper)} | {_cell(c.ours)} |"
            f" {_cell(c.threshold)} | {verdict} |"
            f" {where} |"
        )
    if details:
        lines.append("")
        for c in claims:
            for ev_line in c.evidence:
                lines.append(f"- {c.id}: {ev_line}")
    return "\n".join(lines)
