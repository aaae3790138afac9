"""README.md of an export folder: what each file is, what the parity check found, and Python that runs
model.onnx with onnxruntime on raw data, applying preprocessing.json by hand (no damoxing needed).

The code is written for the run's own data kind and preprocessing settings (only the steps this run
uses), and tests/deploy run it against `damoxing.load(run).predict` on the run's test rows.
"""

from __future__ import annotations

import textwrap

MODEL_FILES = {
    "onnx": "the graph (ONNX): input `input`, output `outputs`, described below",
    "torch": "the torch.export program (load it only with a loader you trust: see below)",
}
FILES = {
    "preprocessing.json": "the run's fitted preprocessing: raw inputs -> `input`, and `outputs` -> predictions",
    "tokenizer.json": "the run's tokenizer (Hugging Face `tokenizers`), read by the code below",
    "postprocess.json": "the run's group thresholds (a mitigated run): they, not the most likely class, decide its predictions",
    "export.json": "how the file was exported and checked (versions, shapes, every parity number)",
}

IMPORTS = """\
import json

import numpy as np
import onnxruntime as ort
"""

DECODE = {
    "classification": """\
def predict(raw):
    \"\"\"Raw inputs -> (labels, class probabilities (N, K) in the order of the labels).\"\"\"
    logits = session.run(["outputs"], {"input": preprocess(raw)})[0]
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    classes = np.array(prep["labels"]["classes_"])
    return classes[p.argmax(axis=1)], p
""",
    "regression": """\
def predict(raw):
    \"\"\"Raw inputs -> predicted values in the target's own units.\"\"\"
    values = session.run(["outputs"], {"input": preprocess(raw)})[0].reshape(-1)
    scaler = prep["target_scaler"]  # the model predicts (y - mean) / std
    return values * scaler["std_"] + scaler["mean_"] if scaler else values
""",
}


def readme(report: dict, preprocessing: dict, run_name: str, model_file: str, companions: list[str]) -> str:
    """The README.md text for an export (report: export.json's dict; preprocessing: preprocessing.json's;
    companions: the other files beside `model_file`)."""
    task, kind = preprocessing["schema"]["task"], preprocessing["schema"]["kind"]
    parts = [f"# `{run_name}`, exported\n",
             f"`{model_file}` holds {report['what']} of the damoxing run `{report['run']}` (task: {task}, data: {kind}).\n",
             _files_table(report["format"], model_file, companions), _contract(report), _parity(report)]
    if "postprocess.json" in companions:
        parts.append(_thresholds())
    if report["format"] == "torch":
        parts.append(_pt2_note(model_file))
    else:
        parts.append(_usage(report, preprocessing, model_file))
    return "\n".join(parts)


def _files_table(format: str, model_file: str, companions: list[str]) -> str:
    rows = "\n".join([f"| `{model_file}` | {MODEL_FILES[format]} |"] + [f"| `{name}` | {FILES[name]} |" for name in companions])
    return f"| file | what it is |\n|---|---|\n{rows}\n"


def _contract(report: dict) -> str:
    given, out = report["input"], report["output"]
    shape = lambda dims: "(" + ", ".join(str(d) for d in dims) + ")"  # noqa: E731
    longest = "".join(f" `{name}` may be at most {most}." for name, most in given.get("longest", {}).items())
    meaning = {"logits": "class scores before the softmax (classifiers: probabilities = softmax; language models: the next token's scores at every position)",
               "log_probabilities": "log class probabilities", "values": "predictions in training units (see `target_scaler`)",
               "samples": "new samples in preprocessed units (invert preprocessing.json's transform for the data's units)"}[out["kind"]]
    source = "latent vectors z ~ N(0, I)" if given["kind"] == "latent" else "preprocessed rows (see the code below)"
    return (f"## Inputs and outputs\n\n- `input`: {given['dtype']} {shape(given['shape'])}, {source}. Named axes vary "
            f"(any batch size; token and step inputs any length).{longest}\n- `outputs`: float32 {shape(out['shape'])}, {out['kind']}: {meaning}.\n"
            "- Preprocessing is not in the graph: apply preprocessing.json first, exactly as below.\n")


def _parity(report: dict) -> str:
    p = report["parity"]
    return (f"## The parity check\n\nBefore this folder was written, {p['candidate']} and {p['reference']} ran the same inputs "
            f"({p['inputs']}) at {len(p['checks'])} shapes (batch 1, 3 and the whole set; shorter lengths where the length varies). "
            f"Largest absolute difference of any output: **{p['max_abs_diff']:.2e}** (allowed {p['tolerance']:g}); "
            f"agreement of {p['agreement_of']}: **{p['agreement']:.4f}** (required {p['min_agreement']:g}). "
            "A failed check writes nothing. Every number is in export.json.\n")


def _thresholds() -> str:
    return textwrap.dedent("""\
        ## Decisions: group thresholds

        This run was mitigated (`damoxing audit --mitigate`): its predicted class is decided from the class
        probabilities by the group thresholds in postprocess.json, using each row's sensitive column, not by the
        most likely class that `predict` below returns. The rule (fairlearn's ThresholdOptimizer, reproduced
        without fairlearn) is written out in damoxing's `inference/postprocess.py`; the graph gives the
        probabilities it starts from.
        """)


def _pt2_note(model_file: str) -> str:
    return textwrap.dedent("""\
        ## Loading MODEL_FILE

        `torch.export.load` unpickles members of a .pt2 archive (with `weights_only=False` as a fallback), so
        a changed file can run code when it is loaded. damoxing writes the archive without pickled members and
        checks an archive before loading it:

        ```python
        from damoxing.deploy.exporters import load_program
        program = load_program("MODEL_FILE")     # refuses pickled members and calls outside torch's operators
        outputs = program(inputs)                 # inputs preprocessed as for the torch model (preprocessing.json)
        ```

        Load it with `torch.export.load` directly only if you trust where the file came from. For anything
        you share, prefer `damoxing export RUN --format onnx`.
        """).replace("MODEL_FILE", model_file)


def _usage(report: dict, prep: dict, model_file: str) -> str:
    task, kind = prep["schema"]["task"], prep["schema"]["kind"]
    if report["input"]["kind"] == "latent":
        body = _latent(prep)
    elif kind == "corpus":
        body = _corpus(prep)
    else:
        body = {"table": _table, "image": _image, "text": _text, "sequence": _sequence}[kind](prep) + "\n\n\n" + DECODE[task]
    head = IMPORTS + ("import pandas as pd\n" if kind == "table" else "") + ("from tokenizers import Tokenizer\n" if kind in ("text", "corpus") else "")
    setup = f'prep = json.load(open("preprocessing.json"))\nsession = ort.InferenceSession("{model_file}")\n'
    return f"## Running it with onnxruntime\n\nFrom this folder, with numpy and onnxruntime (no damoxing):\n\n```python\n{head}\n{setup}\n\n{body.rstrip()}\n```\n"


def _table(prep: dict) -> str:
    columns = prep["inputs"]["columns_"]
    categorical = any(c["kind"] == "categorical" for c in columns)
    onehot = prep["inputs"]["categorical"] == "onehot"
    lines = [
        "def preprocess(frame):",
        '    """A DataFrame with the training columns -> float32 (N, F), as damoxing preprocessed the training data."""',
        "    blocks = []",
        '    for col in prep["inputs"]["columns_"]:',
        '        values = frame[col["name"]]',
    ]
    numeric = [
        'if col["kind"] == "numeric":  # impute, then (x - offset) / scale',
        '    x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)',
        '    x = np.where(np.isfinite(x), x, col["impute"])  # missing and ±inf alike',
        '    blocks.append(((x - col["offset"]) / col["scale"])[:, None])',
    ]
    lines += ["        " + line for line in numeric]
    if any(c["kind"] == "date" for c in columns):
        lines += ["        " + line for line in [
            'elif col["kind"] == "date":  # parts of the date read with the training format, imputed, scaled',
            '    t = pd.to_datetime(values, format=col["format"] or "mixed", errors="coerce", utc=True).dt',
            '    parts = {"year": t.year, "month": t.month, "day_of_week": t.day_of_week, "day_of_year": t.day_of_year, "hour": t.hour}',
            '    x = np.column_stack([parts[p].to_numpy(dtype=float, na_value=np.nan) for p in col["parts"]])',
            '    x = np.where(np.isnan(x), col["impute"], x)',
            '    blocks.append((x - np.array(col["offset"])) / np.array(col["scale"]))',
        ]]
    if categorical:
        lines += ["        " + line for line in [
            "else:  # a category as text; missing -> the most frequent; one not seen in training -> unknown",
            '    text = [col["impute"] if pd.isna(v) else str(v) for v in values]',
            '    known = {c: i for i, c in enumerate(col["categories"])}',
        ]]
        if onehot:
            lines += ["            " + line for line in [
                'index = np.array([known.get(t, len(known)) for t in text])  # the last column is "unknown"',
                "onehot = np.zeros((len(text), len(known) + 1))",
                "onehot[np.arange(len(text)), index] = 1.0",
                "blocks.append(onehot)",
            ]]
        else:
            lines.append('            blocks.append(np.array([[known[t] + 1 if t in known else 0] for t in text], dtype=float))  # 0: unknown')
    lines.append("    return np.hstack(blocks).astype(np.float32)")
    return "\n".join(lines)


def _image(prep: dict) -> str:
    mode = prep["inputs"]["mode"]
    lines = ["def preprocess(images):",
             '    """Images (N, C, H, W) or (N, H, W) in the data\'s own units -> float32 (N, C, H, W)."""',
             "    x = np.asarray(images, dtype=np.float32)",
             "    x = x[:, None] if x.ndim == 3 else x"]
    if mode != "none":
        lines.append('    x = x / np.float32(prep["inputs"]["scale_"])')
    if mode == "standard":
        lines += ['    mean = np.asarray(prep["inputs"]["mean_"], dtype=np.float32)[None, :, None, None]',
                  '    std = np.asarray(prep["inputs"]["std_"], dtype=np.float32)[None, :, None, None]',
                  "    x = (x - mean) / std"]
    lines.append("    return x")
    return "\n".join(lines)


def _text(prep: dict) -> str:
    return textwrap.dedent('''\
        tokenizer = Tokenizer.from_file("tokenizer.json")
        length, pad = prep["inputs"]["max_length_"], prep["inputs"]["pad_id_"]
        tokenizer.enable_truncation(max_length=length)
        tokenizer.enable_padding(pad_id=pad, pad_token=tokenizer.id_to_token(pad) or "<pad>", length=length)


        def preprocess(texts):
            """Texts -> int64 token ids (N, T), special tokens added, right-padded and cut to T, as in training."""
            return np.array([e.ids for e in tokenizer.encode_batch(list(texts))], dtype=np.int64)''')


def _sequence(prep: dict) -> str:
    return textwrap.dedent('''\
        def preprocess(sequences):
            """Sequences (N, T, F) (or (N, T): one feature) -> float32, standardized per feature."""
            x = np.asarray(sequences, dtype=np.float32)
            x = x[:, :, None] if x.ndim == 2 else x
            return (x - np.float32(prep["inputs"]["mean_"])) / np.float32(prep["inputs"]["std_"])''')


def _corpus(prep: dict) -> str:
    return textwrap.dedent('''\
        tokenizer = Tokenizer.from_file("tokenizer.json")
        context = prep["schema"]["input_shape"][0]  # the block length trained on (the graph takes up to the model's context)


        def continue_text(prompt, new_tokens=20):
            """Greedy continuation: the whole (cropped) sequence runs at each step (the graph keeps no cache)."""
            ids = tokenizer.encode(prompt, add_special_tokens=False).ids or [prep["inputs"]["eos_id_"]]
            for _ in range(new_tokens):
                window = np.array([ids[-context:]], dtype=np.int64)
                logits = session.run(["outputs"], {"input": window})[0]  # (1, T, vocab)
                ids.append(int(logits[0, -1].argmax()))
            return tokenizer.decode(ids)''')


def _latent(prep: dict) -> str:
    lines = ["def sample(n, seed=0):",
             '    """n new samples in preprocessed units (N, *input_shape), from z ~ N(0, I)."""',
             '    width = session.get_inputs()[0].shape[1]',
             "    z = np.random.default_rng(seed).standard_normal((n, width)).astype(np.float32)",
             '    return session.run(["outputs"], {"input": z})[0]']
    if prep["inputs"].get("type") == "image":
        lines += ["", "", "def to_data_units(x):",
                  '    """Preprocessed images -> the data\'s own units (e.g. 0-255), as damoxing generate writes them."""',
                  "    inputs = prep[\"inputs\"]"]
        if prep["inputs"]["mode"] == "standard":
            lines.append('    x = x * np.float32(inputs["std_"])[None, :, None, None] + np.float32(inputs["mean_"])[None, :, None, None]')
        if prep["inputs"]["mode"] != "none":
            lines.append('    x = x * np.float32(inputs["scale_"])')
        lines.append("    return x")
    else:
        lines += ["", "", "# each column is one of prep['inputs']['feature_names_out_'], preprocessed: numeric x * scale + offset"]
    return "\n".join(lines)
