"""The run report's section on compression: compression.json of a run written by `damoxing compress`,
before against after on the original run's test rows (the same rows the terminal table shows)."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path


def summary_rows(report: dict) -> list[tuple[str, str, str, str]]:
    """(what, before, after, change) rows for the terminal table."""
    q, size, speed, energy = report["quality"], report["size"], report["speed"], report["energy"]
    b, a = size["before"], size["after"]

    def ci(entry: dict) -> str:
        return f"{entry['value']:.4f}" + (f" [{entry['ci'][0]:.4f}, {entry['ci'][1]:.4f}]" if entry.get("ci") else "")

    test = q.get("mcnemar") or q["paired_bootstrap"]
    rows = [(f"test {q['metric']}", ci(q["before"]), ci(q["after"]),
             f"{q['paired_bootstrap']['a_minus_b']:+.4f} (p={test['p_value']:.3g})"),
            ("size on disk", _mb(b["bytes"]), _mb(a["bytes"]), _times(b["bytes"], a["bytes"], "smaller", "larger")),
            ("weights in memory", _mb(b["weight_bytes"]), _mb(a["weight_bytes"]), _times(b["weight_bytes"], a["weight_bytes"], "smaller", "larger")),
            ("parameters (non-zero)", f"{b['params']:,} ({b['nonzero_params']:,})", f"{a['params']:,} ({a['nonzero_params']:,})", ""),
            ("FLOPs per sample", f"{b['flops_per_sample']:,.0f}", f"{a['flops_per_sample']:,.0f}",
             _times(b["flops_per_sample"], a["flops_per_sample"], "fewer", "more")),
            (f"latency batch 1 ({speed['threads']} threads)", f"{speed['before']['latency_ms_batch1']:.3f} ms",
             f"{speed['after']['latency_ms_batch1']:.3f} ms", _times(speed["latency_speedup"], 1.0, "faster", "slower")),
            ("throughput batch 256", f"{speed['before']['throughput_rows_per_s_batch256']:,.0f}/s",
             f"{speed['after']['throughput_rows_per_s_batch256']:,.0f}/s", f"{speed['throughput_speedup']:.2f}x"),
            ("energy per 1,000 predictions", f"{energy['before']['wh_per_1000']:.2e} Wh", f"{energy['after']['wh_per_1000']:.2e} Wh",
             "estimate" if energy.get("is_estimate") else "measured")]
    if "float_onnx" in speed:  # int8: how much of the speed-up is int8, not the runtime
        f = speed["float_onnx"]
        rows.insert(6, ("  latency, float ONNX graph", f"{f['latency_ms_batch1']:.3f} ms", "", f"int8 {_times(f['int8_latency_speedup'], 1.0, 'faster', 'slower')}"))
    if "agreement" in q:
        rows.insert(1, ("agreement of predictions", "", f"{q['agreement']:.2%}", ""))
    return rows


def _times(before: float, after: float, less: str, more: str) -> str:
    """'2.00x smaller', '1.25x larger' or 'unchanged' (within 0.5%)."""
    if not after or not before:
        return ""
    ratio = before / after
    if abs(ratio - 1.0) < 0.005:
        return "unchanged"
    return f"{ratio:.2f}x {less}" if ratio > 1 else f"{1 / ratio:.2f}x {more}"


def _mb(n: int) -> str:
    return f"{n / 1e6:.3f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def compression_section(run: str | Path) -> str:
    """HTML for report.html: the before/after table and how it was measured; '' when the run was not compressed."""
    file = Path(run) / "compression.json"
    if not file.exists():
        return ""
    try:
        report = json.loads(file.read_text())
        rows = summary_rows(report)
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f'<p class="note">compression.json could not be read ({escape(type(e).__name__)}: {escape(str(e))}).</p>'
    head = "".join(f"<th>{escape(h)}</th>" for h in ("", "before", "after", "change"))
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    settings = ", ".join(f"{k}={v}" for k, v in report.get("settings", {}).items())
    speed = report.get("speed", {})
    return (f"<p>{escape(report.get('method', ''))} ({escape(settings)}) of <code>{escape(report.get('original_run', ''))}</code>, "
            f"measured on {escape(report.get('rows', ''))}. Speed: {escape(speed.get('method', ''))}, {speed.get('threads')} CPU "
            f"thread(s), in one process; energy: {escape(report.get('energy', {}).get('method', ''))}.</p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
