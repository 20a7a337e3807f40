"""The runner: execute the numbered notebooks in order with papermill, one run folder for everything.

Parameters for notebook ``NN_name`` are merged from ``params/NN_name.yaml`` (its defaults), then each ``-f`` file
in order, then each ``-p KEY VALUE``; each notebook receives only the keys its ``parameters`` cell declares.
A key that no notebook declares is an error (a typo must not be silently ignored).
"""

from __future__ import annotations

import os
import re
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from .config import load_params, read_yaml
from .errors import ConfigError
from .files import read_json
from .metrics import tpr_label
from .paths import (
    NOTEBOOKS,
    check_run_name,
    find_data_root,
    notebooks_dir,
    params_dir,
    project_root,
    run_dir,
)
from .progress import ENV_VAR as PROGRESS_ENV
from .progress import progress_mode
from .schema import TRAINING, with_defaults

KERNEL = "python3"


class PipelineError(RuntimeError):
    """A notebook failed; the message names it, the cell and where the executed copy with the traceback is."""

FEATURE_PREFIXES = ("mel_", "face_")


def notebook_path(name: str) -> Path:
    path = notebooks_dir() / f"{name}.ipynb"
    if not path.is_file():
        raise ConfigError(f"notebook {path} not found")
    return path


def declared_parameters(name: str) -> dict[str, Any]:
    """The parameters a notebook declares, with their defaults (from its ``parameters`` cell)."""
    import papermill as pm

    info = pm.inspect_notebook(str(notebook_path(name)))
    return {k: v.get("default") for k, v in info.items()}


def select_notebooks(only: str | Sequence[str] | None) -> list[str]:
    if not only:
        return list(NOTEBOOKS)
    wanted = [s.strip() for s in (only.split(",") if isinstance(only, str) else only) if s.strip()]
    chosen = []
    for w in wanted:
        hits = [n for n in NOTEBOOKS if n == w or n.split("_")[0] == w.zfill(2)]
        if not hits:
            raise ConfigError(f"--only {w!r} matches no notebook; choose from {', '.join(NOTEBOOKS)}")
        chosen.extend(h for h in hits if h not in chosen)
    return [n for n in NOTEBOOKS if n in chosen]


def resolve_notebook_params(names: Iterable[str], files: Sequence[str | Path] = (),
                            overrides: Mapping[str, Any] | None = None) -> dict[str, dict]:
    """Per notebook: its params file, then ``files``, then ``overrides``, restricted to what it declares."""
    user = load_params(files, overrides)
    names = list(names)
    declared = {n: declared_parameters(n) for n in NOTEBOOKS}
    known = set().union(*[set(d) for d in declared.values()])
    unknown = sorted(k for k in set(user) - known if not k.startswith(FEATURE_PREFIXES))
    if unknown:
        raise ConfigError(f"unknown parameter(s) {', '.join(unknown)}: no notebook declares them "
                                 f"(see params/*.yaml for the known names)")
    out = {}
    for n in names:
        own = params_dir() / f"{n}.yaml"
        base = read_yaml(own) if own.is_file() else {}
        merged = {**declared[n], **base, **user}
        # feature fine-tuning (mel_n_mels, face_margin, ...) goes wherever features are made
        # (face_ keys only where face crops are made: 01_eda makes mel images only)
        extra = {k: v for k, v in user.items() if k.startswith(FEATURE_PREFIXES) and "mel_preset" in declared[n]
                 and k not in declared[n] and (not k.startswith("face_") or "face_frames" in declared[n])}
        out[n] = {**{k: merged[k] for k in declared[n]}, **extra}
    return out


def kernel_config() -> Any:
    """Configuration for the kernel manager papermill creates: CurveZMQ transport encryption when available.

    A kernel on TCP without keys logs "Kernel is running over TCP without encryption" (ipykernel, at start-up, in
    the kernel process: once per notebook, and no filter in this process can see it). jupyter_client can give the
    kernel a key pair itself (``KernelManager.transport_encryption``; "auto": when the kernelspec declares
    ``curve``, as ipykernel's does), so the condition the warning describes does not arise. Without libzmq's
    CURVE support nothing changes, and the warning, harmless here, may appear (why: docs/structure.md,
    "Progress output and the kernel warning").
    """
    from traitlets.config import Config

    try:
        import zmq

        curve = bool(zmq.has("curve"))
    except Exception:  # pyzmq is papermill's dependency; an odd build without it: keep the defaults
        curve = False
    return Config({"KernelManager": {"transport_encryption": "auto"}}) if curve else Config()


@contextmanager
def _kernel_progress_lines() -> Iterator[None]:
    """Kernels started inside this block print progress as a few lines (core.progress), unless the user chose.

    papermill's kernels inherit this process's environment; their output is captured into the executed notebook
    (and with ``log_output`` into the log), where a redrawn bar leaves one line per update.
    """
    if PROGRESS_ENV in os.environ:
        yield
        return
    os.environ[PROGRESS_ENV] = "log"
    try:
        yield
    finally:
        os.environ.pop(PROGRESS_ENV, None)


def run_pipeline(run: str, data_root: str | Path | None = None, files: Sequence[str | Path] = (),
                 overrides: Mapping[str, Any] | None = None, only: str | Sequence[str] | None = None,
                 progress: bool = True, log_output: bool = False) -> Path:
    """Execute the notebooks into ``outputs/<run>/``; returns the run folder.

    A failing notebook stops the run with its name and the executed copy (with the traceback) in the folder.
    """
    import papermill as pm

    check_run_name(run)
    over = dict(overrides or {})
    over["run_name"] = run
    if data_root is not None:
        over["data_root"] = str(Path(data_root).expanduser().resolve())
    names = select_notebooks(only)
    per_nb = resolve_notebook_params(names, files, over)
    find_data_root(per_nb[names[0]].get("data_root"))  # fail now, not inside the first notebook
    folder = run_dir(run)
    executed = folder / "notebooks"
    executed.mkdir(parents=True, exist_ok=True)
    for name in names:
        t0 = time.time()
        print(f"[{run}] {name} ...", flush=True)
        out_nb = executed / f"{name}.ipynb"
        try:
            execute_notebook(notebook_path(name), out_nb, per_nb[name], progress=progress, log_output=log_output)
        except pm.PapermillExecutionError as exc:
            _print_warnings(run, name, out_nb)
            raise PipelineError(f"notebook {name} failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue}\n"
                               f"the executed notebook with the full traceback is {out_nb}") from None
        _print_warnings(run, name, out_nb)
        print(f"[{run}] {name} done in {time.time() - t0:.0f} s", flush=True)
    return folder


WARNING_LINE = re.compile(r"^(?P<file>\S.*?):(?P<line>\d+): (?P<category>\w*Warning): (?P<message>.*)$")


def notebook_warnings(path: str | Path) -> list[str]:
    """The workspace's warnings in an executed notebook (``Category: message``, each once): the ones the package
    or a notebook cell raised (clips left out, odd data), not the third-party libraries' deprecation notices."""
    import nbformat

    try:
        nb = nbformat.read(str(path), as_version=4)
    except Exception:  # a notebook papermill could not even write has no warnings to show
        return []
    found: list[str] = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") != "stream" or out.get("name") != "stderr":
                continue
            for line in str(out.get("text", "")).splitlines():
                m = WARNING_LINE.match(line)
                if not m:
                    continue
                ours = "ffdv_utils" in m["file"] or "ipykernel_" in m["file"] or m["category"] == "DataWarning"
                text = f"{m['category']}: {m['message']}"
                if ours and text not in found:
                    found.append(text)
    return found


def _print_warnings(run: str, name: str, executed: Path) -> None:
    for text in notebook_warnings(executed):
        print(f"[{run}] {name} warning: {text}", file=sys.stderr, flush=True)


def execute_notebook(src: str | Path, dst: str | Path, parameters: Mapping[str, Any] | None = None,
                     progress: bool = True, log_output: bool = False, cwd: str | Path | None = None) -> None:
    """Executes one notebook with papermill, as the runner does for each: in the project root, with the
    :func:`kernel_config` kernel manager settings, papermill's own bar only on a terminal and the kernel's
    progress bars as a few lines (``FFDV_PROGRESS=log``, unless already set).

    Raises:
        papermill.PapermillExecutionError: A cell failed (the executed copy with the traceback is ``dst``).
    """
    import papermill as pm

    bar = progress and progress_mode() == "bar"  # papermill's bar: one update per cell
    with _kernel_progress_lines():
        pm.execute_notebook(str(src), str(dst), parameters=dict(parameters or {}), kernel_name=KERNEL,
                            progress_bar=bar, log_output=log_output, cwd=str(cwd or project_root()),
                            config=kernel_config())


def strip_tracked_outputs(model: dict, path: str, contents_manager: Any = None, **kwargs: Any) -> None:
    """JupyterLab's pre-save hook (``.jupyter/jupyter_server_config.py``, ``make lab``): a tracked notebook
    (``notebooks/NN_*.ipynb`` of this workspace) is saved without outputs or execution counts, so saving never
    dirties the repository; any other notebook (a copy in a run folder) is saved as it is."""
    if model.get("type") != "notebook":
        return
    root = Path(getattr(contents_manager, "root_dir", None) or project_root())
    full = (root / str(path).lstrip("/")).resolve()
    if full.parent != notebooks_dir().resolve() or not re.match(r"\d\d_.+\.ipynb$", full.name):
        return
    for cell in model.get("content", {}).get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"], cell["execution_count"] = [], None


def summary(folder: Path) -> None:
    """Print where a run's results are and its headline figures."""
    metrics_path = folder / "metrics.json"
    lines = [f"run folder:        {folder}"]
    if metrics_path.is_file():
        m = read_json(metrics_path)
        n_real = m.get("val_n_real")
        tpr = m.get("val_tpr@fpr=1e-3", float("nan"))
        tpr_text = tpr_label(tpr, n_real, 1e-3) if n_real is not None else f"{tpr:.3f}"
        lines.append(f"validation AUC:    {m.get('val_auc', float('nan')):.4f}   TPR@FPR=1e-3: {tpr_text}")
        history = folder / "history.csv"
        if "best_epoch" in m and history.is_file():
            epochs = max(0, sum(1 for _ in history.open(encoding="utf-8")) - 1)
            recorded = read_yaml(folder / "params.yaml") if (folder / "params.yaml").is_file() else {}
            select = with_defaults(recorded, TRAINING)["select_metric"]
            lines.append(f"model kept:        epoch {m['best_epoch']} of {epochs} (best validation {select}, on "
                         f"{m.get('val_n', '?')} validation clips)")
        if "test_auc" in m:
            lines.append(f"sample test AUC:   {m['test_auc']:.4f}")
    pred = folder / "prediction.csv"
    lines.append(f"prediction.csv:    {pred if pred.is_file() else '(not written)'}")
    lines.append(f"executed notebooks: {folder / 'notebooks'}")
    siblings = sorted(p for p in folder.parent.glob(f"{folder.name}-*") if p.is_dir())
    if siblings:
        size = sum(f.stat().st_size for p in siblings for f in p.rglob("*") if f.is_file())
        lines.append(f"beside it:         {len(siblings)} run folder(s) of 04/05's variants and candidates, "
                     f"{size / 2**20:.0f} MiB ({', '.join(p.name for p in siblings[:4])}"
                     f"{', ...' if len(siblings) > 4 else ''}); remove them with rm -r {folder}-*")
    print("\n".join(lines), file=sys.stdout, flush=True)
