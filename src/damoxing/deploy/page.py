"""The try-it page of `damoxing serve` at /: a form built from the run's schema that calls the API.

A table run gets one input per feature column (a number box, or a choice of the trained categories);
a text run a text box; a language model a prompt box whose continuation streams in from /generate;
a vae/gan a button drawing images. `/?autorun=1` submits the pre-filled form once on load.
"""

from __future__ import annotations

import html
import json


def _table_inputs(preprocessing) -> str:
    parts = []
    for column in preprocessing.inputs.columns_:
        name = html.escape(column["name"], quote=True)
        if column["kind"] == "numeric":
            field = f'<input type="number" step="any" name="{name}" data-kind="number" value="{float(column["impute"]):.4g}">'
        else:
            options = "".join(f'<option{" selected" if str(c) == str(column["impute"]) else ""}>{html.escape(str(c))}</option>'
                              for c in column["categories"])
            field = f'<select name="{name}" data-kind="text">{options}</select>'
        parts.append(f"<label>{name} {field}</label>")
    return "\n".join(parts)


SCRIPT = """
const form = document.getElementById('form'), out = document.getElementById('result');
async function submit(event) {
  if (event) event.preventDefault();
  out.textContent = '...';
  try {
    if (MODE === 'table' || MODE === 'text') {
      let body;
      if (MODE === 'table') {
        const row = {};
        for (const el of form.querySelectorAll('[name]')) row[el.name] = el.dataset.kind === 'number' ? (el.value === '' ? null : Number(el.value)) : el.value;
        body = {rows: [row]};
      } else body = {texts: [form.querySelector('textarea').value]};
      const r = await fetch('predict', {method: 'POST', headers: {'content-type': 'application/json'}, body: JSON.stringify(body)});
      const data = await r.json();
      out.textContent = r.ok ? 'prediction: ' + JSON.stringify(data.predictions[0]) + (data.probabilities ? '\\n' + JSON.stringify(data.probabilities[0]) : '') : 'error ' + r.status + ': ' + JSON.stringify(data.detail);
    } else if (MODE === 'lm') {
      const r = await fetch('generate', {method: 'POST', headers: {'content-type': 'application/json'},
        body: JSON.stringify({prompt: form.querySelector('textarea').value, max_new_tokens: 40, stream: false, seed: 0})});
      const data = await r.json();
      out.textContent = r.ok ? 'generated: ' + data.text : 'error ' + r.status + ': ' + JSON.stringify(data.detail);
    } else {
      const r = await fetch('generate', {method: 'POST', headers: {'content-type': 'application/json'}, body: JSON.stringify({n: 16, seed: 0})});
      const data = await r.json();
      out.innerHTML = r.ok ? 'generated: <img alt="samples" src="data:image/png;base64,' + data.png_base64 + '">' : 'error ' + r.status;
    }
  } catch (e) { out.textContent = 'error: ' + e; }
}
form.addEventListener('submit', submit);
if (new URLSearchParams(location.search).get('autorun')) submit();
"""


def try_it_page(predictor, meta: dict) -> str:
    kind, task = predictor.schema.kind, predictor.task_name
    if task == "language_modeling":
        mode, fields = "lm", '<textarea name="prompt" rows="4" cols="60">the</textarea>'
    elif task == "generation":
        mode, fields = "images", ""
    elif kind == "table":
        mode, fields = "table", _table_inputs(predictor.preprocessing)
    elif kind == "text":
        mode, fields = "text", '<textarea name="text" rows="4" cols="60"></textarea>'
    else:
        mode, fields = "none", "<p>This run takes arrays; send them to POST /predict (see <a href=\"docs\">/docs</a>).</p>"
    title = html.escape(f"{meta['run']}: {meta['model']} ({task})")
    button = "" if mode == "none" else '<button type="submit">Try it</button>'
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:50em;margin:2em auto}} label{{display:block;margin:.3em 0}} pre{{background:#f4f4f4;padding:.5em}}</style>
</head><body><h1>{title}</h1><p>API: <a href="docs">/docs</a> · <a href="metadata">/metadata</a> · <a href="metrics">/metrics</a></p>
<form id="form">{fields}{button}</form><pre id="result"></pre>
<script>const MODE = {json.dumps(mode)};{SCRIPT}</script></body></html>"""
