"""The run report's section on explanations and fairness: what was written for a run, or how to write it.

report.html is written when the run is trained, before anything explains or audits it, and a run
folder is never edited afterwards; so the section says how to explain and audit the run, and when
the report is written again (`damoxing report RUN --out FILE`) it links the explain-RUN-* and
audit-RUN-* folders found beside the run.
"""

from __future__ import annotations

import json
from html import escape as _escape
from pathlib import Path
from typing import Optional


def escape(value) -> str:
    return _escape(str(value), quote=True)


def _table(rows: list[list[str]]) -> str:
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr><th></th><th>folder</th><th>summary</th></tr></thead><tbody>{body}</tbody></table>"



def trust_section(run: str | Path) -> str:
    """For report.html: explain/audit folders written for this run (found beside it), or how to make them."""
    run = Path(run)
    found = []
    for kind, file in (("explain", "explain.json"), ("audit", "audit.json")):
        for folder in sorted(run.parent.glob(f"{kind}-{run.name}-*")):
            data = _read(folder / file)
            if data is not None and Path(data.get("run", "")).name == run.name:
                found.append((kind, folder, data))
    rows = [[escape(kind), f'<a href="../{escape(folder.name)}/{kind}.html">{escape(folder.name)}</a>', escape(_gist(kind, data))]
            for kind, folder, data in found]
    how = ('<p class="note">Not part of training. <code>damoxing explain RUN</code> writes attributions (captum) with their '
           "convergence delta, a sanity check against a randomized model and, for tables, permutation importance with intervals, "
           "into a new folder beside the run (<code>explain-RUN-TIME/explain.html</code>); <code>damoxing audit RUN --sensitive "
           "COLUMN</code> compares the model's errors across groups (<code>audit-RUN-TIME/audit.html</code>) and "
           "<code>--mitigate equalized_odds</code> writes a new run with group thresholds. The run folder itself is never changed; "
           "<code>damoxing report RUN --out FILE</code> lists what was written since.</p>")
    return (_table(rows) if rows else "") + how


def _read(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _gist(kind: str, data: dict) -> str:
    if kind == "explain":
        top = ", ".join(r["column"] for r in (data.get("importance") or {}).get("columns", [])[:3])
        sanity = (data.get("sanity") or {}).get("global_spearman")
        return f"{data.get('method')}, {data.get('rows')} rows" + (f"; top columns {top}" if top else "") + (
            f"; randomized-model rank correlation {sanity:.2f}" if isinstance(sanity, float) else "")
    gaps = data.get("between_groups") or {}
    eo = (gaps.get("equalized_odds_difference") or {}).get("value")
    return f"by {data.get('sensitive')}" + (f"; equalized odds difference {eo:.3f}" if isinstance(eo, float) else "") + (
        f"; mitigated run {Path(data['mitigation']['run']).name}" if data.get("mitigation") else "")
