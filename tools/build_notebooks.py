"""Writes notebooks/*.ipynb (without outputs, with the ``parameters`` tag) and params/NN_*.yaml from one source:
``ffdv_utils.core.schema`` (its ``NOTEBOOK_GROUPS``: the parameters cell of each notebook).

The notebooks stay thin: a parameters cell, calls into ffdv_utils, plots and short prose. This file is their source:
change a notebook here, then write them all again (``tests/test_notebooks.py`` checks that the committed notebooks
and params files are exactly what it writes, so an edit made in Jupyter alone fails the tests instead of being lost
on the next build)::

    python tools/build_notebooks.py           # write notebooks/*.ipynb and params/NN_*.yaml
    python tools/build_notebooks.py --check   # exit 1, naming them, if any differs from what would be written
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
import yaml
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from ffdv_utils.core import schema  # the installed package (pip install -e .): the one source of defaults

ROOT = Path(__file__).resolve().parents[1]


def literal(v) -> str:
    return repr(v)


def params_cell(groups: list[tuple[str, dict]]) -> str:
    lines = []
    for comment, d in groups:
        lines.append(f"# {comment}")
        lines.extend(f"{k} = {literal(v)}" for k, v in d.items())
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


SETUP = """params = collect_params(globals())  # exactly the parameters above (and papermill's injected ones)
run = start_run(params, NOTEBOOK)  # records them; resolves data_root once (run.data_root, a Path)
print(f"run folder: {run.dir}")
print(f"data root:  {run.data_root}")"""


DATA_HOWTO = ("**Your data**: set `data_root` in the parameters cell below to the folder holding `train_label.txt`, "
              "`val_label.txt` and `trainset/`, `valset/`, `testset/` (or set `$FFDV_DATA_ROOT`; from the command "
              "line, `papermill ... -p data_root DIR` or `python -m ffdv_utils pipeline --data-root DIR`; on Kaggle "
              "the attached competition data is found by itself). No data yet? `python -m ffdv_utils sample-data "
              "--out DIR` writes a small sample into `DIR/data`. Choose a `run_name` per experiment: a run name is "
              "a folder, `outputs/<run_name>/`.")


def notebook(name: str, title: str, intro: str, imports: str,
             cells: list[tuple[str, str]]) -> tuple[nbformat.NotebookNode, dict]:
    groups = schema.NOTEBOOK_GROUPS[name]
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells.append(new_markdown_cell(f"# {title}\n\n{intro}\n\n{DATA_HOWTO}"))
    nb.cells.append(new_code_cell(f'{imports}\nfrom ffdv_utils.core.config import collect_params\n'
                                  f'from ffdv_utils.core.runs import start_run\n\nNOTEBOOK = "{name}"'))
    pc = new_code_cell(params_cell(groups))
    pc.metadata["tags"] = ["parameters"]
    nb.cells.append(pc)
    nb.cells.append(new_code_cell(SETUP))
    for kind, src in cells:
        nb.cells.append(new_markdown_cell(src) if kind == "md" else new_code_cell(src.strip("\n")))
    for i, c in enumerate(nb.cells):
        c["id"] = f"{name.replace('_', '-')}-{i:02d}"
    return nb, schema.notebook_defaults(name)


def eda():
    return notebook(
        "01_eda", "01 · Exploratory data analysis",
        "Counts, label balance, media properties, example frames and mel images, and a **shortcut audit**: how well "
        "each metadata field alone predicts the label. A field far from AUC 0.5 is something a model can learn "
        "instead of the manipulation, and will not carry over to a test set made differently.",
        "import pandas as pd\n\nfrom ffdv_utils import data, features\nfrom ffdv_utils.core import plots\nfrom ffdv_utils.features import preview",
        [("md", "## Labels"),
         ("code", """
labels = data.subsample(data.labelled_frame(run.data_root), max_clips, seed=seed)
labels.groupby(["split", "target"]).size().unstack(fill_value=0).rename(columns={0: "real", 1: "fake"})
"""),
         ("code", 'plots.label_balance(labels, run.path("figures", "label_balance.png"));'),
         ("md", "## Media index\nProbed in parallel and cached in the run folder (`media_index.csv`)."),
         ("code", """
index = data.media_index(labels, cache=run.path("media_index.csv"), workers=probe_workers)
index = index.merge(labels[["video_name", "split", "target"]], on="video_name")
index["leading_silence"] = data.leading_silence_column(index.path, workers=probe_workers)
print(f"{len(index)} clips, {int((index.error != '').sum())} unreadable, {int((~index.has_audio.astype(bool)).sum())} without audio")
index.groupby("target")[["duration", "fps", "width", "height", "sample_rate", "channels", "size_bytes", "leading_silence"]].describe().T.round(2)
"""),
         ("code", 'pd.crosstab(index.sample_rate, index.target.map({0: "real", 1: "fake"}), margins=True)'),
         ("code", 'plots.metadata_hists(index, ("duration", "fps", "width", "sample_rate", "size_bytes", "leading_silence"), run.path("figures", "metadata.png"));'),
         ("md", "## Shortcut audit\nAUC of each field alone (best direction). Red bars (>= 0.7) deserve a look before "
                "trusting any validation score."),
         ("code", """
audit = data.shortcut_audit(index)
audit.to_csv(run.path("shortcut_audit.csv"), index=False)
plots.shortcut_audit(audit, run.path("figures", "shortcut_audit.png"))
audit.round(3)
"""),
         ("md", "## Real vs fake: frames and mel images"),
         ("code", """
examples = data.pick_examples(labels, n_examples, seed=seed)
preview.clip_examples(examples, features.mel_params({"mel_preset": mel_preset}), run.path("figures", "examples.png"));
"""),
         ])


def feats():
    return notebook(
        "02_features", "02 · Features: mel spectrograms (and face crops) into the cache",
        "Decodes every clip once (PyAV, no temporary wav) and caches uint8 features keyed by the parameters that "
        "made them. Re-running with the same parameters costs a lookup; a killed run resumes where it stopped. "
        "Clips without audio get a zero image and `has_audio = 0`; clips that cannot be decoded are listed in "
        "`extraction_errors.csv` and the run goes on.",
        "import pandas as pd\n\nfrom ffdv_utils import data, features\nfrom ffdv_utils.core import files, plots",
        [("code", """
clips = data.clips_for_splits(run.data_root, splits, test_dir=test_dir, test_template=test_template)
clips = clips[clips.exists]
print(clips.groupby("split").size().to_string())
feats = features.clip_features(params, clips, inputs, errors_csv=run.path("extraction_errors.csv"))
report = features.extraction_report(params, clips, inputs)  # read from the cache manifests
files.write_json(run.path("features.json"), report)
pd.DataFrame(report["status"]).fillna(0).astype(int)
"""),
         ("md", "Mel images as the model sees them (resized to `image_size`):"),
         ("code", """
show = clips.groupby("split").head(max(1, n_show // 3)).head(n_show)
rows = [list(clips.video_name).index(n) for n in show.video_name]
if "mels" in feats:
    plots.image_grid([feats["mels"][i] for i in rows], [f"{s} · {n[:10]}" for s, n in zip(show.split, show.video_name)],
                     path=run.path("figures", "mels.png"));
"""),
         ("code", """
if "faces" in feats:
    plots.image_grid([feats["faces"].get(n)[0] for n in show.video_name], list(show.video_name),
                     path=run.path("figures", "faces.png"));
"""),
         ])


def train_nb():
    return notebook(
        "03_train", "03 · Train",
        "The default parameters are the public baseline's recipe: timm `resnet18` on mel images, Adam 3e-3, "
        "StepLR(4, 0.85), 10 epochs, batch 40, random flips. The checkpoint kept is the one with the best "
        "**validation AUC** (the competition metric), not accuracy. `model_type` switches between `audio`, `visual`, "
        "`fusion` and `marle`.\n\n"
        "Several GPUs (Kaggle 2x T4): extract the features first (notebook 02), then run in a cell "
        "`!torchrun --standalone --nproc_per_node=2 -m ffdv_utils.train -f params/03_train.yaml --data-root DIR "
        "--run-name NAME` (add `-p KEY VALUE` to change one parameter). It starts one process per GPU with DDP: "
        "`batch_size` is per GPU, each GPU trains on its share of the clips and scores its share of the validation "
        "set, and rank 0 writes the same run folder as this notebook (fp16 with a grad scaler on T4s, bf16 on newer "
        "GPUs). Write `--run-name`: torchrun's own parser rejects `--run`. Then run this notebook with the same run "
        "name and parameters: `fit` finds the finished `last.pt` and only evaluates and plots. A killed run "
        "resumes the same way, from its last finished epoch. See docs/training.md.",
        "import pandas as pd\n\nfrom ffdv_utils import training\nfrom ffdv_utils.core import plots",
        [("code", """
result = training.fit(params, run)
pd.Series(result).to_frame("value")
"""),
         ("md", "## Curves"),
         ("code", """
history = pd.read_csv(run.path("history.csv"))
plots.training_curves(history, run.path("figures", "training_curves.png"));
"""),
         ("md", "## Validation ROC (log FPR: the tie-break metric lives at FPR = 1e-3) and score distributions"),
         ("code", """
val = pd.read_csv(run.path("val_predictions.csv"))
plots.roc({model: (val.target, val.score)}, run.path("figures", "val_roc.png"))
plots.score_hist(val.target, val.score, run.path("figures", "val_scores.png"));
"""),
         ("md", "## Explanation: Grad-CAM\nWhere the model found its evidence on a few validation clips (real and "
                "fake; one fake per manipulation kind when `kinds_csv` names them): the mel image and the face frame "
                "with the strongest response, each with its Grad-CAM heat map for the predicted class."),
         ("code", """
items = training.explain_run(run.dir, n_per_class=n_explain, kinds_csv=kinds_csv)
training.plot_explanations(items, run.path("figures", "gradcam.png"));
"""),
         ])


def augment_nb():
    return notebook(
        "04_augment", "04 · Augmentation: presets, MixUp and CutMix",
        "Shows what each augmentation preset does to a batch of mel images, then trains one short run per variant "
        "from this run's `03_train` parameters and compares validation AUC. Each variant is a run folder "
        "`outputs/<run>-<variant>`.",
        "import pandas as pd\n\nfrom ffdv_utils import experiments\nfrom ffdv_utils.core import plots",
        [("code", """
base = experiments.base_train_params(run_name, run.data_root)
base.update(epochs=variant_epochs, seed=seed)
batch = experiments.example_batch(base, n_show)
experiments.augment_examples(batch, ["none", "baseline", "spec", "strong"], run.path("figures", "augment_presets.png"));
"""),
         ("code", """
board = experiments.run_variants(base, variants)  # one short run per variant, outputs/<run>-<variant>
experiments.save_leaderboard(board, run.dir, "augment_leaderboard.csv")
plots.leaderboard(board, path=run.path("figures", "augment_leaderboard.png"))
board[[c for c in ("name", "augment", "mixup_alpha", "cutmix_alpha", "val_auc", "val_tpr@fpr=1e-2", "val_log_loss", "train_time_s") if c in board]].round(4)
"""),
         ])


def compare_nb():
    return notebook(
        "05_compare", "05 · Model comparison under generalisation protocols",
        "Trains each candidate (by default the audio-only baseline, visual-only, audio-visual fusion and the MaRLe "
        "relation model) from this run's `03_train` parameters plus the candidate's overrides, once per split of "
        "each protocol, and scores it on the split's eval part:\n\n"
        "- `plain`: train split -> val split.\n"
        "- `held_out_kind` (needs `kinds_csv`, e.g. the sample data's `answers/manipulations.csv`): train without "
        "one manipulation kind, evaluate on real clips plus that kind -- an attack the model never saw.\n"
        "- `held_out_identity` (needs `kinds_csv` with an `identity` column, as the sample data's): whole "
        "identities held out -- faces and voices the model never saw, as in FFDV's test set.\n"
        "- `cluster` (kinds unknown): train + val clustered on media / feature statistics, whole clusters held "
        "out.\n"
        "- `grouped` (needs groups: `groups_csv` + `group_column`, or a labelled folder as data root): whole "
        "groups -- sources, generators, your own clusters -- held out, grouped K-fold (`group_folds`) or "
        "leave-one-group-out (`group_folds: 0`). Point `data_root` at a folder of `labels.csv` + `clips/` (e.g. "
        "`-f params/realworld.yaml -p data_root DIR`) for leave-source-out on real-world clips.\n"
        "- `test` (needs `test_labels`): train split -> labelled test split (sample data).\n\n"
        "Two floors run under every protocol (`floors`): `floor-baseline`, the public baseline notebook's recipe "
        "(seed mel image, ResNet18, Adam 3e-3, StepLR(4, 0.85), 10 epochs; random init, since the notebook's "
        "ImageNet download is never made here), and `floor-metadata`, a logistic regression on container and "
        "stream fields only. The `floors` column flags every candidate that does not beat both.\n\n"
        "The last epoch is kept (the eval part never picks a checkpoint). Each (candidate, split) is trained once "
        "per training seed (`seeds`: a count from the 03 seed, or a list; use 3 or more to compare models). ONE "
        "leaderboard: per protocol the AUC as mean ± sd over seeds with a bootstrap 95 % interval (eval clips "
        "resampled, reals and fakes apart, 1000 times, the same resample for every seed), TPR at FPR 1e-2 and 1e-3 "
        "with the number of real clips beside them -- n/a where fewer than 1/FPR real clips cannot resolve that FPR "
        "-- per-kind AUCs, parameters. Models over the 200M-parameter cap are flagged and not trained. Every "
        "(candidate, split, seed) is a run folder `outputs/<run>-<candidate>[-s<seed>]-<split>`.",
        "import pandas as pd\n\nfrom ffdv_utils import experiments\nfrom ffdv_utils.core import plots",
        [("code", """
results = experiments.run_protocols(run_name, run.data_root, candidates, eval_protocols, kinds_csv=kinds_csv,
                                  test_labels=test_labels, shared=shared, n_clusters=n_clusters,
                                  cluster_folds=cluster_folds, seed=seed, seeds=seeds, groups_csv=groups_csv,
                                  group_column=group_column, group_folds=group_folds, floors=floors,
                                  floor_baseline_pretrained=floor_baseline_pretrained)
board = experiments.protocol_leaderboard(results, folder=run.dir)  # numbers; intervals from protocol_predictions/
experiments.save_leaderboard(board, run.dir, "leaderboard.csv")
experiments.leaderboard_display(board)
"""),
         ("md", "AUC per protocol and unseen kind: the dot is the mean over seeds, the thick bar ± sd over seeds "
                "(with 2 seeds or more), the thin bar the bootstrap 95 % interval of that mean (clip sampling):"),
         ("code", """
plots.auc_intervals(board, run.path("figures", "protocol_auc_intervals.png"));
"""),
         ("md", "How much of the real-only score to join (`real_only_weight`), for each candidate that has one: the "
                "same two saved columns (its model's scores and the real-only scores) mixed at every weight, each "
                "protocol's AUC over seeds, and the held-out mean (unseen kinds, identities or clusters) to choose the "
                "weight by -- never the test split (`experiments.joins`):"),
         ("code", """
for label in experiments.joined_candidates(results):
    sweep = experiments.weight_sweep(results, run.dir, f"{label}[model]", f"{label}[real_only]")
    experiments.plot_weight_sweep(sweep, run.path("figures", f"weight_sweep_{label}.png"), title=label)
    display(sweep.round(3))
"""),
         ("md", "Per split and seed (`held_out` names the unseen kind or the held-out clusters; `auc[kind]` is real "
                "vs that kind; `auc_ci_lo` / `auc_ci_hi` the split's own bootstrap 95 % interval; a TPR is NaN where "
                "`n_real` < 1/FPR; `pseudo_fakes_off`: the pseudo-fake families a held-out-kind fold switched off):"),
         ("code", """
experiments.detail_table(results).round(3)
"""),
         ("md", "ROC curves per protocol split (cluster and identity folds pooled; log FPR):"),
         ("code", """
experiments.plot_protocol_rocs(experiments.protocol_curves(results, run.dir), run.path("figures", "protocol_roc.png"));
"""),
         ("md", "## Lip-sync cue\nThe untrained cue the fusion model's synchrony head starts from: the correlation over "
                "the sampled frames between speech energy and the spread of grey levels round the lips. Real clips "
                "sit well above 0; audio from another clip sits near 0. `auc_vs_real` is how well the cue alone "
                "tells each kind from real clips (train and val clips, the run's feature settings)."),
         ("code", """
cue = experiments.sync_cue_table({**experiments.base_train_params(run_name, run.data_root), **shared}, run.data_root,
                                 kinds_csv=kinds_csv)
cue.to_csv(run.path("sync_cue.csv"), index=False)
experiments.plot_sync_cue(cue, run.path("figures", "sync_cue.png"))
experiments.sync_cue_summary(cue).round(3)
"""),
         ("md", "## Backbones\nThe training notebook itself, executed with papermill once per backbone (its run folder "
                "`outputs/<run>-<backbone>/` holds the executed notebook); val AUC, TPR, time and size, with any model "
                "over the 200M-parameter cap flagged and not trained."),
         ("code", """
backbone_board = experiments.run_candidates(run_name, run.data_root, backbones, backbone_overrides)
experiments.save_leaderboard(backbone_board, run.dir, "backbone_leaderboard.csv")
if "val_auc" in backbone_board:
    plots.leaderboard(backbone_board.dropna(subset=["val_auc"]), path=run.path("figures", "backbone_leaderboard.png"))
backbone_board.round(4)
"""),
         ])


def submission_nb():
    return notebook(
        "06_submission", "06 · Submission",
        "Scores the template's clips with this run's best checkpoint (or an ensemble of `runs`), with optional "
        "test-time augmentation, and writes `prediction.csv` (`video_name,score`) after validating it: every "
        "template row once, in order, finite scores in [0, 1]. Clips that cannot be decoded get `fallback_score` and "
        "are listed in `prediction_issues.csv`; `prediction_sources.json` records what produced the file.\n\n"
        "`runs`: run names (or `.pt` files) to ensemble, default this run; `ensemble`: `mean` of probabilities or "
        "`rank` average; `tta`: passes averaged per clip (plain, time-reversed, shifted). `test_dir` and "
        "`test_template` pick the clips: a template (e.g. the validation rows of phase 1) or every video in the "
        "folder. The same scores come from `python -m ffdv_utils score --run NAME VIDEO ...`.",
        "import pandas as pd\n\nfrom ffdv_utils import data, inference\nfrom ffdv_utils.core import plots",
        [("code", """
clips = data.list_test(run.data_root, test_dir, test_template)
print(f"{len(clips)} clips to score, {int((~clips.exists).sum())} missing from {test_dir}")
scores, sources = inference.predict_runs(runs or [run_name], clips, tta=tta, method=ensemble, device=device,
                                       errors_csv=run.path("prediction_errors.csv"), fallback_score=fallback_score)
pred = inference.write_submission(clips, scores, run.path("prediction.csv"))
issues = inference.write_prediction_record(run, scores, sources, params)
print(f"wrote {run.path('prediction.csv')} ({len(pred)} rows, validated); {len(issues)} clip(s) with a fallback or note")
pred.head()
"""),
         ("code", "plots.score_hist([0] * len(pred), pred.score, run.path('figures', 'test_scores.png'));"),
         ("md", "With answers (the sample dataset ships them outside its data folder), the same metrics as validation:"),
         ("code", """
if test_labels:
    report = inference.evaluate_prediction(run, pred, test_labels, test_kinds)
    plots.roc({"test": (report["y"], report["score"])}, run.path("figures", "test_roc.png"))
    display(pd.DataFrame(report["table"]).round(4))
"""),
         ])


BUILDERS = {"01_eda": eda, "02_features": feats, "03_train": train_nb, "04_augment": augment_nb,
            "05_compare": compare_nb, "06_submission": submission_nb}


def rendered() -> dict[str, str]:
    """{path relative to the project root: text} of every file this builder writes."""
    out = {}
    for name, build in BUILDERS.items():
        nb, defaults = build()
        nbformat.validate(nb)
        out[f"notebooks/{name}.ipynb"] = nbformat.writes(nb) + "\n"
        header = f"# Defaults of notebooks/{name}.ipynb (its 'parameters' cell). YAML 1.1: write 1.0e-3, not 1e-3.\n"
        out[f"params/{name}.yaml"] = header + yaml.safe_dump(defaults, sort_keys=False)
    return out


def stale(root: Path = ROOT) -> list[str]:
    """The files under ``root`` that differ from what ``rendered`` gives (or are missing)."""
    return [rel for rel, text in rendered().items()
            if not (root / rel).is_file() or (root / rel).read_text(encoding="utf-8") != text]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 if a file differs")
    args = ap.parse_args(argv)
    if args.check:
        bad = stale()
        print("\n".join(f"differs from the builder: {rel}" for rel in bad) or "notebooks and params files up to date")
        return 1 if bad else 0
    for rel, text in rendered().items():
        path = ROOT / rel
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
