"""The `damoxing` command: thin. It parses arguments, calls the API and formats errors.

Nothing heavy is imported at module level, so `damoxing --help` answers at once; each command
imports what it needs. A user error prints one paragraph to stderr and exits 2 (no traceback
unless --debug); the run folder's path is the last line of `train`'s stdout.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(
    name="damoxing",
    help="damoxing (大模型): describe data and model in YAML, train with one command, then evaluate, predict and compare from the run folder.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_state = {"debug": False}


@app.callback()
def _main(
    debug: bool = typer.Option(False, "--debug", help="Show Python tracebacks for errors."),
    no_verify: bool = typer.Option(False, "--no-verify", help="Load runs without checking their files against the checksums in manifest.json."),
) -> None:
    _state["debug"] = debug
    if no_verify:  # imported only when asked: `--help` stays fast
        from damoxing.runs.folder import set_verify

        set_verify(False)


def _probe_out(out: Optional[Path]) -> None:
    """A verb's --out destination proven writable before any work (runs/folder.probe_output)."""
    if out is not None:
        from damoxing.runs.folder import probe_output

        probe_output(out)


def _parse_sets(sets: Optional[List[str]]) -> dict:
    from damoxing.config import parse_override

    return dict(parse_override(s) for s in sets or [])


@app.command()
def train(
    config: Optional[Path] = typer.Argument(None, help="YAML config (see `damoxing init`); optional with --resume."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a config value: key.path=value (repeatable)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder to write (default runs/<name>-<time>)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or notes."),
    nproc: int = typer.Option(1, "--nproc", min=1, help="Train in N processes on this machine (torchrun; DDP or FSDP). For several machines run `torchrun ... -m damoxing train CFG` on each."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue a run interrupted after a checkpoint (train.checkpoint_every): the run folder it printed."),
) -> None:
    """Train, evaluate and save a run; prints the run folder's path last."""
    import os

    from damoxing.core.errors import UserError

    if config is None and resume is None:
        raise UserError("train needs a CONFIG file (see `damoxing init`), or --resume RUN to continue an interrupted run.")
    if resume is not None and out is not None:
        raise UserError("--out does not go with --resume: a resumed run finishes in its own folder (the RUN you passed).")
    under_torchrun = "WORLD_SIZE" in os.environ
    if nproc > 1 and not under_torchrun:
        from damoxing.training.distributed import launch

        if config is not None:
            from damoxing.spec import load_config

            load_config(config, _parse_sets(set_))  # a bad config fails here, once, not in every process
        argv = (["--debug"] if _state["debug"] else []) + ["train"] + ([str(config)] if config is not None else [])
        for s in set_ or []:
            argv += ["--set", s]
        argv += (["--out", str(out)] if out else []) + (["--quiet"] if quiet else []) + (["--resume", str(resume)] if resume else [])
        code = launch(argv, nproc)
        if code:
            sys.exit(code)  # the workers said why (rank 0 prints a user error)
        return
    from damoxing.verbs.train import train as train_run

    run = train_run(config, out=out, quiet=quiet, overrides=_parse_sets(set_), resume=resume)
    if int(os.environ.get("RANK", "0")) == 0:
        typer.echo(str(run.path))
    if run.manifest.get("training", {}).get("stopped") == "interrupted":  # Ctrl-C: saved what was trained, exit 130
        print(f"interrupted: what was trained so far is saved in {run.path}", file=sys.stderr)
        sys.exit(130)


@app.command()
def evaluate(
    run: Path = typer.Argument(..., help="A run folder."),
    data: Optional[Path] = typer.Option(None, "--data", help="Labelled CSV/Parquet/NPZ (default: the run's own test split)."),
    split: str = typer.Option("test", "--split", help="The run's own split to evaluate: val or test."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Re-evaluate a saved run on its test split or on new labelled data."""
    from damoxing.verbs.evaluate import evaluate as evaluate_run

    result = evaluate_run(run, data, split=split)
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=float))
        return
    _print_metrics(result)


def _print_metrics(result: dict) -> None:
    from rich.table import Table

    from damoxing.evaluation.metrics import ci_label

    table = Table("metric", "model", ci_label(result.get("ci_level")) if result.get("ci") else "CI", "baseline")
    metrics, ci, base = result["metrics"], result.get("ci", {}), result.get("baseline", {})
    for name, value in metrics.items():
        if isinstance(value, (int, float)) or value is None:
            interval = ci.get(name)
            table.add_row(name, _fmt(value), f"{_fmt(interval[0])} - {_fmt(interval[1])}" if interval else "", _fmt(base.get(name)))
    _console().print(table)


def _console():
    """A stdout console; wide when stdout is not a terminal, so piped tables are not cut."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=200)


def _fmt(v) -> str:
    return "" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))


@app.command()
def predict(
    run: Path = typer.Argument(..., help="A run folder."),
    input: Path = typer.Argument(..., help="CSV/Parquet (tables) or NPZ/NPY/IDX (images)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write predictions to this CSV/Parquet (default: print CSV)."),
) -> None:
    """Predict with a saved run; writes `prediction` (and `proba_<class>` for classifiers)."""
    _probe_out(out)
    from damoxing.verbs.predict import predict_file

    frame = predict_file(run, input, out)
    if out is None:
        typer.echo(frame.to_csv(index=False), nl=False)
        return
    typer.echo(str(out))

@app.command()
def generate(
    run: Path = typer.Argument(..., help="A run folder of a generative model: a language model, a vae or a gan."),
    prompt: str = typer.Option("", "--prompt", help="Language models: the text to continue (default: start a new text)."),
    max_new_tokens: int = typer.Option(100, "--max-new-tokens", help="Language models: the most tokens to add."),
    temperature: float = typer.Option(1.0, "--temperature", help="0: always the most likely token; 1: the model's distribution; higher: more random."),
    top_k: Optional[int] = typer.Option(None, "--top-k", help="Sample only among the k most likely tokens."),
    top_p: Optional[float] = typer.Option(None, "--top-p", help="Sample only among the most likely tokens that hold this much probability (nucleus)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed: the same seed gives the same text or images."),
    n: Optional[int] = typer.Option(None, "--n", help="vae/gan: how many images (default 64) or table rows (default: as many as the training split)."),
    out: Optional[Path] = typer.Option(None, "--out", help="vae/gan: FILE.png (a grid of images) or FILE.npz (arrays, key 'images'); on a table FILE.csv or FILE.parquet (FILE.quality.json is written beside it)."),
    interpolate: bool = typer.Option(False, "--interpolate", help="vae: n images along a line between two latent points."),
    target: Optional[str] = typer.Option(None, "--target", help="Table rows: the label column for the train-synthetic-test-real check (default: data.target, else label/target/y/class)."),
) -> None:
    """Generate with a saved run: a language model continues --prompt (streaming the text as it is made);
    a vae or gan draws --n new images into --out, or, trained on a table, --n new rows in the table's
    own columns with a fidelity, privacy and utility report."""
    _probe_out(out)
    from damoxing.verbs.generate import generate as generate_run
    from damoxing.verbs.generate import run_task

    if run_task(run) == "generation":
        typer.echo(str(generate_run(run, n=n, out=out, seed=seed, interpolate=interpolate, target=target)))
        return

    echoed = False  # the prompt is echoed once the run is known to generate, so an error leaves stdout empty

    def stream(piece: str) -> None:
        nonlocal echoed
        if not echoed:
            sys.stdout.write(prompt)
            echoed = True
        sys.stdout.write(piece)
        sys.stdout.flush()

    generate_run(run, prompt=prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                 seed=seed, on_text=stream)
    stream("\n")


@app.command()
def embed(
    source: str = typer.Argument(..., help="A run folder of a pretrained model, a checkpoint folder, or a short name (minilm)."),
    input: Path = typer.Argument(..., help="A .txt file (one text per line) or a CSV/Parquet table with a text column."),
    out: Path = typer.Option(..., "--out", help="Write the embeddings to this .npy (N x D array) or .parquet (text, embedding)."),
    column: Optional[str] = typer.Option(None, "--column", help="CSV/Parquet: the text column (default: the only text column)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Texts per forward pass."),
) -> None:
    """Sentence embeddings (mean-pooled, L2-normalized) of every text, from a pretrained model."""
    _probe_out(out)
    from damoxing.verbs.embed import embed_file

    typer.echo(str(embed_file(source, input, out, column=column, batch_size=batch_size)))

@app.command()
def init(
    template: str = typer.Argument("digits-cnn", help="Starter to write; `damoxing init --list` shows them."),
    out: Optional[Path] = typer.Option(None, "--out", help="File to write (default <template>.yaml)."),
    list_: bool = typer.Option(False, "--list", help="List the templates."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Write a commented starter config."""
    _probe_out(out)
    from damoxing.templates import TEMPLATES, template_text

    if list_:
        for name, description in TEMPLATES.items():
            typer.echo(f"{name:24s} {description}")
        return
    text = template_text(template)
    target = out or Path(f"{template}.yaml")
    if target.exists() and not force:
        from damoxing.core.errors import UserError

        raise UserError(f"'{target}' already exists; pass --force to overwrite it or --out to write elsewhere.")
    target.write_text(text)
    typer.echo(str(target))


@app.command()
def schema() -> None:
    """Print the config's JSON Schema (for editor autocompletion)."""
    from damoxing.spec import config_schema

    typer.echo(json.dumps(config_schema(), indent=2))


@app.command()
def datasets() -> None:
    """List the bundled datasets (builtin:NAME)."""
    from rich.table import Table

    from damoxing.data.sources.builtin import list_builtins

    table = Table("source", "kind", "task", "rows", "shape", "classes", "description")
    for d in list_builtins():
        table.add_row(f"builtin:{d['name']}", d["kind"], d["task"], str(d["rows"]), str(d["shape"]),
                      str(d.get("n_classes") or ""), d["description"])
    _console().print(table)


@app.command()
def report(
    run: Path = typer.Argument(..., help="A run folder."),
    out: Optional[Path] = typer.Option(None, "--out", help="HTML file to write (default <RUN>/report.html)."),
) -> None:
    """Write the run's self-contained HTML report (plots embedded; works offline); prints its path."""
    _probe_out(out)
    from damoxing.report.html import write_report
    from damoxing.runs.folder import check_run

    typer.echo(str(write_report(check_run(run), out)))


@app.command()
def runs(
    folder: Path = typer.Argument(Path("runs"), help="Folder holding run folders (default ./runs)."),
    sort: str = typer.Option("created", "--sort", help="created | name | task | model | metric | params | train_seconds | energy_kwh"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Table of past runs read from their folders: task, model, headline metric, params, time, energy."""
    from damoxing.runs.tracking import list_runs, sort_runs

    skipped: list[str] = []
    rows = sort_runs(list_runs(folder, skipped), sort)
    _say_leftovers(folder, skipped)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    table = Table("run", "task", "model", "metric", "value (95% CI)", "params", "train s", "energy kWh")
    for r in rows:
        ci = f" ({r['metric_ci'][0]:.4f}-{r['metric_ci'][1]:.4f})" if r.get("metric_ci") else ""
        value = f"{r['metric']:.4f}{ci}" if r.get("metric") is not None else ""
        energy = "" if r.get("energy_kwh") is None else f"{r['energy_kwh']:.3g}" + (" (est.)" if r.get("energy_is_estimate") else "")
        table.add_row(r["name"], r["task"], r["model"], r.get("metric_name") or "", value,
                      "" if r.get("params") is None else f"{r['params']:,}",
                      "" if r.get("train_seconds") is None else f"{r['train_seconds']:.2f}", energy)
    _console().print(table)
    if not rows:
        typer.echo(f"no runs under {folder}", err=True)
    from damoxing.runs.tracking import unfinished_runs

    for u in unfinished_runs(folder):  # stale partial folders are shown, never removed
        how = f"continue with: damoxing train --resume {u['final']}" if u["resumable"] else "no checkpoint: remove it when no training writes it"
        typer.echo(f"unfinished: {u['path']} ({u['age_hours']:.1f} h old; {how})", err=True)


@app.command()
def recover(
    partial: Path = typer.Argument(..., help="An unfinished run: its hidden .NAME.partial folder (or NAME), as `damoxing runs` lists it."),
) -> None:
    """Finish a run whose last step (moving it into place) failed: checks its files, then moves it to its name."""
    from damoxing.runs.folder import recover as recover_run

    typer.echo(str(recover_run(partial)))


def _say_leftovers(folder: Path, skipped: list[str]) -> None:
    """Notes on stderr for the damaged run folders `runs` left out of its table."""
    for entry in skipped:
        typer.echo(f"note: skipped a damaged run folder: {entry}", err=True)


@app.command()
def explain(
    run: Path = typer.Argument(..., help="A run folder (a classifier or regressor on tables, images, sequences or texts)."),
    input: Optional[Path] = typer.Argument(None, help="Rows to explain (CSV/Parquet/NPZ/NPY; default: the run's test split)."),
    method: str = typer.Option("integrated_gradients", "--method", help="integrated_gradients | saliency | occlusion | feature_ablation"),
    rows: Optional[int] = typer.Option(None, "--rows", min=1, help="Explain the first N rows (default 1000 table rows, 32 images, 50 texts)."),
    out: Optional[Path] = typer.Option(None, "--out", help="A new folder for the results (default <runs>/explain-<run>-<time>)."),
    sanity: bool = typer.Option(True, "--sanity/--no-sanity", help="Also explain randomized copies of the model and report the rank correlation."),
    repeats: int = typer.Option(30, "--repeats", min=1, help="Tables: permutation importance repeats per column."),
) -> None:
    """Attributions of a run's predictions (captum), global importance with intervals, a sanity check; writes explain.html."""
    _probe_out(out)
    from damoxing.verbs.explain import explain as explain_run
    from damoxing.verbs.explain import summary_lines

    result = explain_run(run, input, method=method, rows=rows, out=out, sanity=sanity, repeats=repeats)
    for line in summary_lines(result):
        typer.echo(line, err=True)
    typer.echo(str(result.path))


@app.command()
def audit(
    run: Path = typer.Argument(..., help="A run folder (a classifier or regressor trained on a table)."),
    sensitive: str = typer.Option(..., "--sensitive", help="The column whose groups are compared (it need not be a model input)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Labelled CSV/Parquet with the inputs, target and sensitive column (default: the run's test split)."),
    mitigate: Optional[str] = typer.Option(None, "--mitigate", help="demographic_parity | equalized_odds: fit group thresholds on the validation split and write a new run."),
    objective: str = typer.Option("accuracy", "--objective", help="What the thresholds maximize under the constraint: accuracy | balanced_accuracy."),
    positive: Optional[str] = typer.Option(None, "--positive", help="The class whose selection rate and TPR/FPR are compared (default: the second of two)."),
    out: Optional[Path] = typer.Option(None, "--out", help="A new folder for audit.html and audit.json (default <runs>/audit-<run>-<time>)."),
    mitigated_out: Optional[Path] = typer.Option(None, "--mitigated-out", help="The new run folder of a mitigation (default <runs>/mitigated-<run>-<time>)."),
) -> None:
    """Group metrics with intervals, parity gaps, and optionally a mitigation (fairlearn); writes audit.html."""
    _probe_out(out)
    _probe_out(mitigated_out)
    from damoxing.verbs.audit import audit as audit_run
    from damoxing.verbs.audit import summary_lines

    result = audit_run(run, sensitive, data=data, mitigate=mitigate, objective=objective, positive=positive, out=out,
                       mitigated_out=mitigated_out)
    _console().print(audit_table(result.report))
    for line in summary_lines(result):
        typer.echo(line)
    typer.echo(str(result.path))


def audit_table(report: dict):
    """The per-group table of an audit, for the terminal."""
    from rich.table import Table

    metrics = ["accuracy", "selection_rate", "true_positive_rate", "false_positive_rate"] if report["task"] == "classification" else ["mae", "rmse", "bias"]
    table = Table("group", "rows", *metrics)
    for g in report["groups"]:
        cells = []
        for m in metrics:
            ci = g.get(f"{m}_ci")
            cells.append("undefined" if g[m] is None else f"{g[m]:.3f}" + (f" ({ci[0]:.3f}-{ci[1]:.3f})" if ci else ""))
        table.add_row(str(g["group"]) + (" (small)" if g.get("small") else ""), str(g["count"]), *cells)
    return table


@app.command()
def compare(
    runs: List[Path] = typer.Argument(..., help="Two or more run folders trained on the same data with the same split."),
    metric: Optional[str] = typer.Option(None, "--metric", help="Test metric to compare (default: the task's headline, e.g. accuracy, r2)."),
    cost: str = typer.Option("params", "--cost", help="Cost axis of the frontier: params | flops | seconds | energy."),
    out: Optional[Path] = typer.Option(None, "--out", help="New folder for compare.json and compare.html (default runs/compare-<time>)."),
    resamples: int = typer.Option(2000, "--resamples", min=1, help="Paired bootstrap resamples."),
) -> None:
    """Runs side by side: metric with intervals and cost, paired tests on the same test rows (Holm-corrected),
    the Pareto frontier of metric vs cost; writes compare.json and compare.html and prints the folder last."""
    _probe_out(out)
    from damoxing.report.compare import terminal_tables
    from damoxing.verbs.compare import compare as compare_runs

    result = compare_runs(runs, metric=metric, cost=cost, out=out, n_resamples=resamples)
    console = _console()
    for part in terminal_tables(result):
        console.print(part)
    typer.echo(result.path)


@app.command()
def ladder(
    config: Path = typer.Argument(..., help="A YAML config: its data (and train settings) are what every rung uses."),
    rungs: Optional[str] = typer.Option(None, "--rungs", help="Comma-separated rungs (default: those for the data kind; an unknown name lists them)."),
    seeds: int = typer.Option(1, "--seeds", min=1, help="Train each rung with K seeds and report the between-seed spread."),
    out: Optional[Path] = typer.Option(None, "--out", help="New folder for the rungs' runs and the comparison (default runs/ladder-<name>-<time>)."),
    metric: Optional[str] = typer.Option(None, "--metric", help="Test metric to compare by (default: the task's headline)."),
    cost: str = typer.Option("params", "--cost", help="Cost axis of the frontier: params | flops | seconds | energy."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a config value for every rung: key.path=value (repeatable)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or notes from the rungs' training."),
) -> None:
    """Train a ladder on the data of one config - scikit-learn references, then damoxing's families from small
    to large - and compare it; prints the comparison's folder last."""
    _probe_out(out)
    from damoxing.report.compare import terminal_tables
    from damoxing.verbs.ladder import ladder as run_ladder

    result = run_ladder(config, rungs=rungs.split(",") if rungs else None, seeds=seeds, out=out, metric=metric, cost=cost,
                        overrides=_parse_sets(set_), quiet=quiet)
    console = _console()
    for part in terminal_tables(result.comparison):
        console.print(part)
    typer.echo(result.comparison.path)


@app.command()
def export(
    run: Path = typer.Argument(..., help="A run folder."),
    format: str = typer.Option("onnx", "--format", help="onnx (an ONNX graph, checked with onnxruntime) or torch (a torch.export program, .pt2)."),
    out: Optional[Path] = typer.Option(None, "--out", help="A new folder, or the model file itself (FILE.onnx / FILE.pt2, the other files beside it); default runs/export-<run>-<time>/."),
    opset: Optional[int] = typer.Option(None, "--opset", help="ONNX opset to write (18 or later; default: the exporter's)."),
) -> None:
    """Export a run's model (ONNX or torch.export) with its preprocessing, checked against the run's model on its test rows;
    writes model + preprocessing.json + export.json + README.md and prints the model file's path last."""
    _probe_out(out)
    from damoxing.verbs.export import PT2_WARNING
    from damoxing.verbs.export import export as export_run

    report = export_run(run, format=format, out=out, opset=opset)
    typer.echo(f"exported {report.what} to {report.format}: {report.bytes / 1e6:.2f} MB in {report.export_seconds:.1f} s", err=True)
    typer.echo(f"{report.parity.summary()}", err=True)
    if report.format == "torch":
        typer.echo("warning: " + PT2_WARNING.format(file=report.file), err=True)
    typer.echo(report.file)


@app.command()
def tune(
    config: Path = typer.Argument(..., help="A YAML config with a tune: section (search space, metric, sampler, pruner)."),
    trials: Optional[int] = typer.Option(None, "--trials", min=1, help="Trials in total for the study (default: tune.trials); a rerun continues to this count."),
    timeout: Optional[float] = typer.Option(None, "--timeout", min=0, help="Stop starting new trials after this many seconds."),
    jobs: int = typer.Option(1, "--jobs", min=1, help="Trials in parallel processes on this machine (one torch thread each)."),
    storage: Optional[str] = typer.Option(None, "--storage", help="sqlite:///PATH.db or postgresql://USER@HOST/DB for trials on several machines (default: a journal file in the study folder)."),
    study: Optional[str] = typer.Option(None, "--study", help="Study name (default <name>-tune); rerunning with the same name continues it."),
    out: Optional[Path] = typer.Option(None, "--out", help="Study folder (default runs/<study>)."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a config value for every trial: key.path=value (repeatable)."),
) -> None:
    """Search hyperparameters with optuna: every trial a real run (validation only), pruning, parallel and resumable;
    writes best.yaml, tune.json and tune.html and prints the study folder last."""
    from damoxing.verbs.tune import summary_lines
    from damoxing.verbs.tune import tune as tune_study

    result = tune_study(config, trials=trials, timeout=timeout, jobs=jobs, storage=storage, study=study, out=out,
                        overrides=_parse_sets(set_))
    for line in summary_lines(result):
        typer.echo(line, err=True)
    typer.echo(str(result.folder))


def _run_app(argv: Optional[list[str]]) -> None:
    """The app; `--no-verify` (read by the callback) holds for this one command only."""
    try:
        code = app(args=argv, standalone_mode=False)  # typer 0.29 returns Ctrl-C as 130 here instead of raising
        if code == 130:
            raise KeyboardInterrupt
        if isinstance(code, int) and code:
            sys.exit(code)
    finally:
        folder = sys.modules.get("damoxing.runs.folder")
        if folder is not None:
            folder.set_verify(True)


@app.command()
def compress(
    run: Path = typer.Argument(..., help="A finished run folder (the original is only read)."),
    method: str = typer.Option(..., "--method", help="quantize (int8 through ONNX Runtime), prune (neurons / channels) or distill (a student config)."),
    out: Optional[Path] = typer.Option(None, "--out", help="The new run folder (must not exist); default <run>-<method>-<time> beside the run."),
    dtype: str = typer.Option("int8", "--dtype", help="quantize: the weights' type (int8)."),
    mode: str = typer.Option("dynamic", "--mode", help="quantize: dynamic (any exportable family) or static (cnn, calibrated on training rows)."),
    sparsity: float = typer.Option(0.5, "--sparsity", help="prune: the share of neurons / channels (or weights) removed, in (0, 1)."),
    structured: str = typer.Option("true", "--structured", help="prune: true (remove whole neurons / channels) or false (zero single weights by magnitude)."),
    finetune_epochs: Optional[int] = typer.Option(None, "--finetune-epochs", help="prune: epochs of fine-tuning (default: the run's train.epochs)."),
    student: Optional[Path] = typer.Option(None, "--student", help="distill: the student's config (YAML); its data must be the teacher run's."),
    temperature: float = typer.Option(4.0, "--temperature", help="distill: softmax temperature T of the KL term (x T^2)."),
    alpha: float = typer.Option(0.5, "--alpha", help="distill: weight of the task loss beside the KL term."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for the latency and throughput measurements (default: torch's)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
) -> None:
    """Compress a run into a NEW run folder (int8, pruned or distilled) and measure before against after on its test rows:
    metric with intervals and a paired test, size, parameters, FLOPs, latency, throughput, energy. Prints the new folder last."""
    from damoxing.core.errors import UserError
    from damoxing.verbs.compress import compress as compress_run
    from damoxing.verbs.compress import summary_lines

    flags = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
    if structured.lower() not in flags:
        raise UserError(f"--structured is '{structured}'; give true (remove whole neurons / channels) or false (zero single weights).")
    result = compress_run(run, method, out=out, dtype=dtype, mode=mode, sparsity=sparsity, structured=flags[structured.lower()],
                          finetune_epochs=finetune_epochs, student=student, temperature=temperature, alpha=alpha, threads=threads,
                          quiet=quiet)
    for line in summary_lines(result):
        typer.echo(line, err=True)
    typer.echo(result.path)


@app.command()
def serve(
    run: Path = typer.Argument(..., help="A run folder."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; anything but loopback needs DAMOXING_API_KEY set."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    workers: int = typer.Option(1, "--workers", help="Worker processes (each loads the model; the app is stateless)."),
    backend: str = typer.Option("torch", "--backend", help="torch (the run's model) or onnx (exported at start, run with onnxruntime)."),
    max_batch: int = typer.Option(64, "--max-batch", help="Most rows in one micro-batched forward pass (1: no batching)."),
    max_wait_ms: float = typer.Option(1.0, "--max-wait-ms", help="How long a request waits for others to batch with."),
) -> None:
    """Serve a run over HTTP (FastAPI): /predict, /generate, /embed, /metadata, /metrics, /docs and a try-it page at /."""
    from damoxing.verbs.serve import serve as serve_run

    serve_run(run, host=host, port=port, workers=workers, backend=backend, max_batch=max_batch, max_wait_ms=max_wait_ms)


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point: runs the app and turns user errors into one paragraph and exit code 2."""
    from damoxing.core.errors import UserError

    try:
        _run_app(argv)
    except UserError as e:
        if _state["debug"]:
            raise
        import os

        if int(os.environ.get("RANK", "0")) == 0:  # under torchrun every process hits the same error; one says it
            print(f"error: {e.message}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as e:  # click usage errors carry their own formatting
        click_exception, abort = _click_error_classes()
        if isinstance(e, abort):  # Ctrl-C inside click's own handling arrives as Abort
            print("interrupted", file=sys.stderr)
            sys.exit(130)
        if isinstance(e, click_exception):
            e.show()
            sys.exit(2 if e.exit_code == 1 else e.exit_code)  # a usage mistake is a user error: exit 2
        raise


def _click_error_classes() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """Click's ClickException and Abort, from every click typer may use.

    typer 0.29 vendors click as `typer._click`; older typers use the separate `click` package.
    Catching only one of them let every usage mistake end in a traceback with exit 1."""
    import importlib

    exceptions, aborts = [], []
    for name in ("typer._click.exceptions", "typer.exceptions", "click.exceptions"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module, "ClickException"):
            exceptions.append(module.ClickException)
        if hasattr(module, "Abort"):
            aborts.append(module.Abort)
    return tuple(exceptions), tuple(aborts)

if __name__ == "__main__":
    main()
