"""``python -m ffdv_utils <command>``: the workspace from a terminal or a Kaggle cell. Every argparse parser lives here.

Commands: demo, pipeline, params, kernel, sample-data, extract, train, score, submission (score, merge), probe, cache
(report, prune), bench (extraction, train, api, scale), kaggle (stage, push, check).

Imports of the stages are lazy (inside each command), on purpose: ``sample-data`` and ``bench extraction`` must not
import torch (about 1 GB and seconds per process, inherited by every forked feature worker), so only the light
core modules are imported when the parser is built.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..core.config import load_params, parse_value
from ..core.errors import ConfigError
from ..core.paths import outputs_dir, params_dir, run_dir


def _pipeline(args: argparse.Namespace) -> int:
    from ..core.runner import run_pipeline, summary  # papermill: only for this command

    overrides = {k: parse_value(v) for k, v in args.param}
    folder = run_pipeline(args.run, args.data_root, args.file, overrides, args.only, progress=not args.quiet)
    summary(folder)
    return 0


def _params(args: argparse.Namespace) -> int:
    """One notebook's parameters, merged as the runner merges them, as YAML (for papermill -f: only the keys the
    notebook declares, so papermill has no unknown parameter to warn about)."""
    import yaml

    from ..core.runner import resolve_notebook_params, select_notebooks

    names = select_notebooks(args.notebook)
    if len(names) != 1:
        raise ConfigError(f"params takes one notebook, {args.notebook!r} names {len(names)}")
    overrides = {k: parse_value(v) for k, v in args.param}
    resolved = resolve_notebook_params(names, args.file, overrides)[names[0]]
    text = (f"# {names[0]} parameters from {', '.join(args.file) or 'its defaults'}: papermill "
            f"notebooks/{names[0]}.ipynb OUT.ipynb -f THIS.yaml -k ffdv\n"
            + yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True))
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        print(text, end="")
    return 0


def _kernel(args: argparse.Namespace) -> int:
    from ..core.kernel import install_kernel

    folder = install_kernel(args.prefix)
    print(f"kernel spec 'ffdv' written to {folder}: papermill IN.ipynb OUT.ipynb -k ffdv")
    return 0


def _demo(args: argparse.Namespace) -> int:
    overrides = {k: parse_value(v) for k, v in args.param}
    demo(args.run, n=args.n, seed=args.seed, files=args.file, overrides=overrides)
    return 0


def _train(args: argparse.Namespace) -> int:
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    train_main(rest)
    return 0


def _score(args: argparse.Namespace) -> int:
    from ..core.shards import Shard
    from ..inference.score import score_table

    shard = Shard.parse(args.shard)
    videos = [v for v in args.videos if shard is None or shard.holds(Path(v).name)]
    if not videos:  # no file of this part among those given
        print("video_name,score")
        return 0
    table = score_table(videos, args.run, device=args.device, tta=args.tta, progress=False)
    print("video_name,score")
    for name, s in zip(table.video_name, table.score):
        print(f"{name},{s:.6f}")
    for path, status in zip(videos, table.status):
        if status != "ok":  # still scored (a fallback value, or on what the file has), but the caller should know
            print(f"warning: {path}: {status}", file=sys.stderr)
    return 0


def _extract(args: argparse.Namespace) -> int:
    if args.merge:
        from ..features.plan import merge_cache

        merged = merge_cache()
        for folder, counts in merged.items():
            print(f"{folder}: merged {counts['shard_files']} shard manifest(s), {counts['rows']} rows in manifest.csv")
        if not merged:
            print("no shard manifest to merge")
        return 0
    if not args.file and not args.param:
        raise ConfigError("extract needs the run's parameters (-f PRESET.yaml, -p KEY VALUE) or --merge")
    from ..core.schema import notebook_defaults
    from ..core.shards import Shard

    shard = Shard.parse(args.shard)  # a wrong K/N fails here, before anything is read or imported
    from ..features.plan import extract_plan
    overrides = {k: parse_value(v) for k, v in args.param}
    if args.data_root:
        overrides["data_root"] = str(Path(args.data_root).resolve())
    params = load_params(args.file, overrides, base=notebook_defaults("03_train"))
    splits = [s.strip() for s in args.split.split(",") if s.strip()]
    report = extract_plan(params, splits, shard=shard, embeddings=not args.no_embeddings, workers=args.workers,
                          progress=not args.quiet)
    print(json.dumps(report, sort_keys=True))
    return 0


def _submission_score(args: argparse.Namespace) -> int:
    from ..core.shards import Shard
    from ..data.labels import list_test
    from ..inference.shards import part_name, score_part

    shard = Shard.parse(args.shard)
    runs = [r.strip() for r in ",".join(args.run).split(",") if r.strip()]
    clips = list_test(args.data_root, args.test_dir, args.template)
    plain_name = not any(c in runs[0] for c in "/\\") and not runs[0].endswith(".pt")
    folder = run_dir(runs[0]) if plain_name else outputs_dir()  # a checkpoint path: outputs/parts/
    out = Path(args.out) if args.out else folder / "parts" / part_name(shard)
    part, _ = score_part(runs, clips, shard, out, tta=args.tta, method=args.ensemble, device=args.device,
                         progress=not args.quiet, fallback_score=args.fallback_score)
    print(f"wrote {out}: part {shard.label}, {len(part)} of {len(clips)} template rows, "
          f"{int((part.status != 'ok').sum())} with a fallback or note")
    return 0


def _submission_merge(args: argparse.Namespace) -> int:
    from ..data.labels import list_test
    from ..inference.shards import merge_parts

    template = list_test(args.data_root, args.test_dir, args.template)
    pred = merge_parts(args.parts, template, args.out)
    print(f"wrote {args.out} ({len(pred)} rows in the template's order, validated) from {len(args.parts)} part(s)")
    return 0


def add_submission_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``submission score`` (one shard of the template into a part file) and ``submission merge``."""
    p = subparsers.add_parser("submission", help="sharded scoring: score part K/N of the template, merge the parts",
                              description="Score the template's clips in N parts (on N machines or sessions), then "
                                          "merge the part files into prediction.csv (notebook 06's scores).")
    sub = p.add_subparsers(dest="submission_command", required=True)

    def clips_args(s: argparse.ArgumentParser) -> None:
        s.add_argument("--data-root", default=None, help="FFDV data folder (default: found on Kaggle or "
                                                         "$FFDV_DATA_ROOT)")
        s.add_argument("--test-dir", default="testset", help="folder of the clips to score (default testset)")
        s.add_argument("--template", default=None, help="CSV whose video_name column lists the rows (default: "
                                                        "every video in --test-dir)")

    s = sub.add_parser("score", help="score part K of N of the template's clips into a part file")
    s.add_argument("--run", action="append", required=True, help="run name or .pt file (repeat or comma-separate "
                                                                 "to ensemble)")
    s.add_argument("--shard", required=True, metavar="K/N", help="part K of N (K from 1 to N)")
    clips_args(s)
    s.add_argument("--tta", type=int, default=1)
    s.add_argument("--ensemble", default="mean", help="mean (rank is refused with shards)")
    s.add_argument("--fallback-score", type=float, default=None)
    s.add_argument("--device", default="auto")
    s.add_argument("-o", "--out", default=None, help="part file (default outputs/<run>/parts/"
                                                     "prediction.part-K-of-N.csv; outputs/parts/ for a .pt)")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=_submission_score)

    s = sub.add_parser("merge", help="merge part files into prediction.csv (each template row once, in order)")
    s.add_argument("parts", nargs="+", help="part files (submission score's, or score's output)")
    clips_args(s)
    s.add_argument("-o", "--out", required=True, help="prediction.csv to write")
    s.set_defaults(func=_submission_merge)
    return p


def _probe(args: argparse.Namespace) -> int:
    import pandas as pd

    from ..data.index import media_index

    clips = pd.DataFrame({"video_name": [Path(v).name for v in args.videos], "path": [str(Path(v).resolve())
                                                                                     for v in args.videos]})
    print(media_index(clips, progress=False).drop(columns=["path", "stamp"], errors="ignore").to_csv(index=False))
    return 0


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--file", action="append", default=[], help="parameter YAML (repeatable, later wins)")
    p.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                   help="one parameter, value read as YAML (repeatable, wins over files)")


def _cache(args: argparse.Namespace) -> int:
    """``cache``: what the feature cache holds; ``cache prune``: stale parameter sets and packed stacks."""
    import pandas as pd

    from ..core.paths import cache_dir
    from ..features.housekeeping import cache_report, prune, report_totals

    root = Path(args.root) if args.root else cache_dir()
    with pd.option_context("display.width", 200, "display.max_colwidth", 60, "display.max_rows", None):
        if args.action == "report":
            report = cache_report(root)
            print(f"cache {root}: {len(report)} folder(s)")
            if len(report):
                print(report.drop(columns=["last_use_ts"]).to_string(index=False))
                print(report_totals(report).to_string(index=False))
            return 0
        items = prune(root, yes=args.yes, older_than_days=args.older_than)
        size = int(items.bytes.sum()) if len(items) else 0
        if len(items):
            print(items.drop(columns=[] if args.yes else ["removed"]).to_string(index=False))
    verb = "removed" if args.yes else "would remove (dry run: add --yes to delete)"
    print(f"{verb}: {len(items)} item(s), {size / 2**20:.1f} MiB")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m ffdv_utils", description="FFDV deepfake-detection workspace")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("pipeline", help="run the numbered notebooks with papermill into outputs/<run>")
    p.add_argument("--data-root", default=None, help="FFDV data folder (default: found on Kaggle or $FFDV_DATA_ROOT)")
    p.add_argument("--run", required=True, help="run name: results go to outputs/<run>")
    p.add_argument("--only", default=None, help="comma-separated notebook numbers, e.g. 02,03")
    p.add_argument("--quiet", action="store_true", help="no papermill progress bars")
    _add_common(p)
    p.set_defaults(func=_pipeline)

    p = sub.add_parser("params", help="one notebook's merged parameters as YAML, for papermill -f")
    p.add_argument("notebook", help="notebook name or number, e.g. 03")
    p.add_argument("-o", "--out", default=None, help="write the YAML here (default: print it)")
    _add_common(p)
    p.set_defaults(func=_params)

    p = sub.add_parser("kernel", help="install the 'ffdv' Jupyter kernel (encrypted transport) for papermill -k ffdv")
    p.add_argument("--prefix", default=None, help="environment prefix (default: this Python's, sys.prefix)")
    p.set_defaults(func=_kernel)

    p = sub.add_parser("demo", help="make the sample dataset and run the whole pipeline on it")
    p.add_argument("--run", default="demo")
    p.add_argument("--n", type=int, default=100, help="clips in the sample dataset")
    p.add_argument("--seed", type=int, default=0)
    _add_common(p)
    p.set_defaults(func=_demo)

    p = sub.add_parser("extract", help="extract the features a run's parameters need, whole or one shard (K/N)",
                       description="Fill the feature cache with what the run's parameters read (mel images, face "
                                   "crops, frozen backbones' embeddings) for the data root's splits. With --shard K/N "
                                   "only part K of N (by a hash of each clip's name), written to its own manifest "
                                   "files: run K = 1..N at once, here or on N machines, then copy the cache folders "
                                   "together and merge (--merge, or any unsharded extraction).")
    p.add_argument("--data-root", default=None, help="FFDV data folder (default: the parameters', found on Kaggle "
                                                     "or $FFDV_DATA_ROOT)")
    p.add_argument("--split", default="train,val,test", help="comma-separated splits (default train,val,test)")
    p.add_argument("--shard", default=None, metavar="K/N", help="only part K of N of the clips (K from 1 to N)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: feature_workers, else all cores)")
    p.add_argument("--no-embeddings", action="store_true", help="skip the frozen backbones' embeddings")
    p.add_argument("--merge", action="store_true", help="only merge the cache's shard manifests into manifest.csv")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_common(p)
    p.set_defaults(func=_extract)

    p = sub.add_parser("train", help="train from parameter files (also under torchrun)", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_train)

    p = sub.add_parser("score", help="the test API: print video_name,score for each file")
    p.add_argument("--run", required=True, help="run name or checkpoint (.pt) path")
    p.add_argument("--device", default="auto")
    p.add_argument("--tta", type=int, default=1)
    p.add_argument("--shard", default=None, metavar="K/N", help="only the files of part K of N (by file name)")
    p.add_argument("videos", nargs="+")
    p.set_defaults(func=_score)

    p = sub.add_parser("probe", help="print the media index (duration, fps, size, audio) of video files")
    p.add_argument("videos", nargs="+")
    p.set_defaults(func=_probe)

    p = sub.add_parser("cache", help="report the feature cache (sizes per kind); cache prune: stale sets, stacks")
    p.add_argument("action", nargs="?", choices=["report", "prune"], default="report")
    p.add_argument("--yes", action="store_true", help="prune: delete (default: list what would go)")
    p.add_argument("--older-than", type=float, default=None, metavar="DAYS",
                   help="prune: only what was last used more than DAYS days ago")
    p.add_argument("--root", default=None, help="cache folder (default: the workspace's, $FFDV_CACHE)")
    p.set_defaults(func=_cache)

    add_sample_data_parser(sub)
    add_submission_parser(sub)
    add_bench_parser(sub)
    add_kaggle_parser(sub)
    return ap


def _user_errors() -> tuple[type, ...]:
    """Errors that mean "your input is wrong": one clear line, not a traceback. Only modules already imported
    are asked, so a light command (sample-data, bench extraction) never imports torch just to catch errors."""
    errors: list[type] = [ConfigError, FileNotFoundError]
    for module, name in (("data.labels", "DataError"), ("models.rules", "ModelRuleError"),
                         ("inference.submission", "SubmissionError"), ("core.runner", "PipelineError"),
                         ("features.extract", "DiskFullError")):
        mod = sys.modules.get(f"ffdv_utils.{module}")
        if mod is not None:
            errors.append(getattr(mod, name))
    return tuple(errors)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:
        # everything after `train` belongs to the training entry point (the same one torchrun launches)
        argv = ["train", "--", *argv[1:]]
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except Exception as exc:
        why = library_load_failure(exc)
        if why:
            print(f"error: {why}", file=sys.stderr)
            return 2
        if not isinstance(exc, _user_errors()):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2


def address_space_limit() -> str:
    """The process's address-space limit (``ulimit -v``) in words."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    except (ImportError, OSError, ValueError):
        return "unknown"
    return "unlimited" if soft == resource.RLIM_INFINITY else f"{soft / 2**30:.1f} GiB"


def library_load_failure(exc: BaseException) -> str:
    """What a shared library that could not be mapped means ('' for any other error)."""
    text = str(exc)
    if not isinstance(exc, (ImportError, OSError)) or not any(
            t in text.lower() for t in ("failed to map segment", "cannot allocate memory")):
        return ""
    return (f"a library could not be loaded ({type(exc).__name__}: {text.strip()}): the process could not map it "
            f"into memory. Its address-space limit (ulimit -v) is {address_space_limit()}, and torch maps several "
            "GiB of shared libraries when it is imported (the CUDA build more than the CPU one), whatever the device. "
            "Raise the limit (ulimit -v unlimited, or 8 GiB at least) or install the CPU build of torch "
            "(pip install torch --index-url https://download.pytorch.org/whl/cpu)")


def demo(run: str = "demo", n: int = 100, seed: int = 0, files: Sequence[str | Path] = (),
         overrides: Mapping[str, Any] | None = None) -> Path:
    """Generate the embedded sample dataset (once) and run the whole pipeline on it with ``params/demo.yaml``."""
    from ..core.runner import run_pipeline, summary
    from ..sample_data.generate import make_sample_dataset

    sample = outputs_dir() / "sample_data"
    data_root = sample / "data"
    if not (data_root / "train_label.txt").is_file():
        print(f"generating the sample dataset ({n} clips) in {sample}", flush=True)
        make_sample_dataset(sample, n=n, seed=seed)
    demo_params = params_dir() / "demo.yaml"
    answers = sample / "answers"  # kept outside the data folder, used only to score the finished prediction
    folder = run_pipeline(run, data_root, [demo_params, *files],
                          {"test_template": "test_template.csv", "test_labels": str(answers / "test_label.txt"),
                           "test_kinds": str(answers / "manipulations.csv"),
                           "kinds_csv": str(answers / "manipulations.csv"), **(overrides or {})})
    summary(folder)
    return folder


def train_main(argv: list[str] | None = None) -> dict:
    """``python -m ffdv_utils train`` / ``torchrun ... -m ffdv_utils.train``: train from parameter files."""
    from ..core.runs import Run, start_run
    from ..core.schema import notebook_defaults
    from ..training.loop import fit
    from ..training.runtime import is_main

    ap = argparse.ArgumentParser(prog="ffdv_utils.train", description="Train a model from parameter files "
                                 "(one process, or one per GPU under torchrun).")
    ap.add_argument("-f", "--file", action="append", default=[], help="parameter YAML (repeatable, later wins)")
    ap.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"))
    ap.add_argument("--data-root", default=None)
    # --run-name: torchrun's own parser rejects "--run" as an ambiguous abbreviation of its --run-path
    ap.add_argument("--run-name", "--run", dest="run", default=None, help="run name (outputs/<run>)")
    args = ap.parse_args(argv)
    overrides = {k: parse_value(v) for k, v in args.param}
    if args.data_root:
        overrides["data_root"] = str(Path(args.data_root).resolve())
    if args.run:
        overrides["run_name"] = args.run
    # the same defaults as notebook 03's parameters cell: both resolve the same parameters
    params = load_params(args.file, overrides, base=notebook_defaults("03_train"))
    run = start_run(params, "03_train") if is_main() else Run(
        name=params["run_name"], dir=run_dir(params["run_name"]), params=params)
    return fit(params, run)


def _extraction_cmd(args: argparse.Namespace) -> int:
    if "torch" in sys.modules:
        # The CLI imported torch (about 1 GB) before we got here; forked workers would inherit and report it, so
        # the figures come from a fresh interpreter that holds only what extraction needs.
        import subprocess

        argv = ["extraction", "--make-clips", str(args.make_clips)]
        for flag, value in (("--videos", args.videos), ("--workers", args.workers), ("--limit", args.limit),
                            ("--clips-dir", args.clips_dir)):
            if value is not None:
                argv += [flag, str(value)]
        argv += ["--no-faces"] * args.no_faces + ["--quiet"] * args.quiet + ["--short"] * args.short
        return subprocess.call([sys.executable, "-m", "ffdv_utils", "bench", *argv])
    from ..bench.extraction import bench_extraction

    result = bench_extraction(args.videos, args.workers, args.limit, make_n=args.make_clips,
                              clips_dir=args.clips_dir, faces=not args.no_faces, progress=not args.quiet,
                              short=args.short)
    print(json.dumps(result, sort_keys=True))
    return 0


def _add_extraction(bench_sub: Any, help_: str) -> None:
    p = bench_sub.add_parser("extraction", help=help_)
    p.add_argument("--videos", default=None, help="folder of clips (default: generate --make-clips clips)")
    p.add_argument("--workers", type=int, default=None, help="processes for the parallel run (default: all cores)")
    p.add_argument("--limit", type=int, default=None, help="use at most N clips")
    p.add_argument("--make-clips", type=int, default=8, metavar="N", help="clips to generate without --videos")
    p.add_argument("--clips-dir", default=None, help="keep generated clips here and reuse them next time")
    p.add_argument("--short", action="store_true",
                   help="generate short clips (3-6 s, 320x240 to 640x480, 16-48 kHz) instead of 5-10 s ones")
    p.add_argument("--no-faces", action="store_true", help="skip the face-crop timing")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_extraction_cmd)


def _embeddings_cmd(args: argparse.Namespace) -> int:
    from ..bench.embeddings import bench_embeddings

    result = bench_embeddings(args.videos, args.limit, make_n=args.make_clips, backbone=args.model,
                              pretrained=args.pretrained, image_size=args.image_size, face_frames=args.face_frames,
                              device=args.device, progress=not args.quiet)
    print(json.dumps(result, sort_keys=True))
    return 0


def _add_embeddings(bench_sub: Any) -> None:
    p = bench_sub.add_parser("embeddings", help="frozen-backbone embeddings of mel images and face crops: clips/s")
    p.add_argument("--videos", default=None, help="folder of clips (default: generate --make-clips clips)")
    p.add_argument("--limit", type=int, default=None, help="use at most N clips")
    p.add_argument("--make-clips", type=int, default=16, metavar="N", help="clips to generate without --videos")
    p.add_argument("--model", default="tf_efficientnet_lite0", help="timm backbone")
    p.add_argument("--pretrained", default="package:efficientnet_lite0", help="its weights")
    p.add_argument("--image-size", type=int, default=128, help="mel image side")
    p.add_argument("--face-frames", type=int, default=8, help="face crops per clip")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_embeddings_cmd)


def _api_cmd(args: argparse.Namespace) -> int:
    from ..bench.api import bench_api

    result = bench_api(args.videos, args.run, calls=args.calls, cached=args.cached, make_n=args.make_clips,
                       old_path=not args.no_old_path)
    print(json.dumps(result, sort_keys=True))
    return 0


def _add_api(bench_sub: Any) -> None:
    p = bench_sub.add_parser("api", help="the test API per call (score_video) with an empty and a full feature cache")
    p.add_argument("--videos", default=None, help="folder of clips (default: generate --make-clips small clips)")
    p.add_argument("--run", default=None, help="run name, folder or .pt (default: a small fusion network with both "
                   "parts, untrained)")
    p.add_argument("--calls", type=int, default=30, help="timed calls per setting")
    p.add_argument("--cached", type=int, nargs="+", default=[0, 4800], metavar="N", help="cache sizes (clips)")
    p.add_argument("--make-clips", type=int, default=8, metavar="N", help="clips to generate without --videos")
    p.add_argument("--no-old-path", action="store_true", help="skip the cached path (what score_video ran before)")
    p.set_defaults(func=_api_cmd)


def _scale_cmd(args: argparse.Namespace) -> int:
    from ..bench.scale import bench_scale

    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    overrides = {k: parse_value(v) for k, v in args.param}
    result = bench_scale(args.n, stages, args.preset, args.source, work=args.work, overrides=overrides,
                         poll_s=args.poll, out=args.out, embedding_memory_n=args.embedding_memory,
                         test_clips=args.test_clips)
    print(json.dumps({"growth": result["growth"], "projection_totals_h": result["projection"]["totals"],
                      "projection_disk_gb": result["projection"]["disk_gb"]}, sort_keys=True))
    return 0


def _add_scale(bench_sub: Any) -> None:
    p = bench_sub.add_parser("scale", help="per-stage cost and peak memory at N and 4N clips, growth exponents, "
                             "projection to 250,000 + 100,000 clips")
    p.add_argument("--n", type=int, default=100, help="training clips of the small root (default 100; 4N = 400)")
    p.add_argument("--stages", default="mel,faces,embeddings,train,score", help="comma-separated stages")
    p.add_argument("--preset", default=None, help="parameter file (default params/best.yaml)")
    p.add_argument("--source", default=None, help="data root whose clips are linked (default: a generated sample)")
    p.add_argument("--work", default=None, help="keep roots, caches and outputs here (default: a temporary folder)")
    p.add_argument("--out", default=None, help="write scale.json, growth.csv, projection.csv here")
    p.add_argument("--poll", type=float, default=0.5, help="seconds between memory polls (default 0.5)")
    p.add_argument("--test-clips", type=int, default=None, help="test clips at N (4x at 4N; default max(64, N // 5))")
    p.add_argument("--embedding-memory", type=int, default=0, metavar="K",
                   help="also the peak RSS of reading K and 4K cached face embeddings, streamed and stacked")
    p.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                   help="a parameter override for every stage (value read as YAML)")
    p.set_defaults(func=_scale_cmd)


def add_bench_parser(subparsers: Any) -> None:
    """Adds ``bench extraction``, ``bench embeddings``, ``bench train`` and ``bench api`` to the CLI's subparsers."""
    p = subparsers.add_parser("bench", help="benchmarks: bench extraction, bench embeddings, bench train, bench api")
    bench_sub = p.add_subparsers(dest="bench", required=True)
    _add_extraction(bench_sub, "baseline vs workspace audio features, and face crops: clips/s")
    _add_embeddings(bench_sub)
    add_bench_train_parser(bench_sub)
    _add_api(bench_sub)
    _add_scale(bench_sub)


def _compile_arg(value: str) -> Any:
    return {"true": True, "false": False}.get(value.lower(), value)


def _bench_train_cmd(args: argparse.Namespace) -> int:
    from ..bench.training import bench_train, report

    result = bench_train(model=args.model, device=args.device, steps=args.steps, batch=args.batch,
                         image_size=args.image_size, workers=args.workers, warmup=args.warmup, amp=args.amp,
                         channels_last=not args.no_channels_last, compile=args.compile, threads=args.threads,
                         baseline_step=args.baseline_step, seed=args.seed, progress=not args.quiet)
    print(report(result))
    print(json.dumps(result, sort_keys=True, default=str))
    return 0


def add_bench_train_parser(bench_subparsers: Any) -> argparse.ArgumentParser:
    """Adds ``train`` to the ``bench`` subcommand's subparsers."""
    p = bench_subparsers.add_parser("train", help="training images/s: baseline JPEG loader vs the feature cache",
                                    description="Training throughput: the public baseline's JPEG loader and step "
                                                "against the workspace's feature cache, AMP and channels-last.")
    p.add_argument("--model", default="resnet18", help="timm backbone (default resnet18)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--steps", type=int, default=None, help="timed steps per measurement (default 3 CPU, 100 GPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 1 CPU, 10 GPU)")
    p.add_argument("--batch", type=int, default=40, help="batch size (default 40, the baseline's)")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers for both (default 0 CPU, <=8 GPU)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default unchanged)")
    p.add_argument("--amp", default="auto", help="workspace step: auto, bf16, fp16 or off")
    p.add_argument("--no-channels-last", action="store_true", help="workspace step in NCHW")
    p.add_argument("--compile", type=_compile_arg, default=False, help="torch.compile the workspace model: "
                   "true or a mode (max-autotune, reduce-overhead)")
    p.add_argument("--baseline-step", choices=("baseline", "workspace"), default="baseline",
                   help="the baseline's step settings (fp32, NCHW) or the workspace's (isolates the loader)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_bench_train_cmd)
    return p


def _stage_cmd(args: argparse.Namespace) -> int:
    from ..packaging.kaggle import METADATA_SOURCE, PLACEHOLDER, stage

    overrides = {k: parse_value(v) for k, v in args.param}
    res = stage(args.out, args.run, args.owner, overrides, weights=not args.no_weights,
                extra_wheels=args.extra_wheel)
    print(f"staged kernel {res['kernel_id']} in {res['folder']}")
    print(f"  notebook: {res['notebook'].name}; dataset {res['dataset_id']}: "
          + ", ".join(sorted(p.name for p in res["dataset"].iterdir())))
    if res["problems"]:
        print("before pushing, fix:\n  - " + "\n  - ".join(res["problems"]), file=sys.stderr)
        if any(PLACEHOLDER in p for p in res["problems"]):
            print(f"  (stage again with --owner YOUR_KAGGLE_NAME, set KAGGLE_USERNAME, or edit {METADATA_SOURCE})",
                  file=sys.stderr)
        return 1
    print(f"next: python -m ffdv_utils kaggle push --dir {res['folder']}")
    return 0


def _push_cmd(args: argparse.Namespace) -> int:
    from ..packaging.kaggle import push

    return push(args.dir, args.message, args.wait)


def _check_cmd(args: argparse.Namespace) -> int:
    from ..packaging.kaggle import check_staged

    folder = Path(args.dir) if args.dir else outputs_dir() / "kaggle"
    problems = check_staged(folder)
    if problems:
        print("problems:\n  - " + "\n  - ".join(problems), file=sys.stderr)
        return 1
    print(f"{folder}: kernel and dataset metadata pass the Kaggle CLI's rules")
    return 0


def add_kaggle_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``kaggle stage|push|check`` to the ``python -m ffdv_utils`` parser."""
    p = subparsers.add_parser("kaggle", help="stage, check and push the offline Kaggle submission kernel",
                              description="Kaggle round trip: stage an offline kernel folder and a dataset "
                                          "(the workspace wheel, weights), check them, push them.")
    sub = p.add_subparsers(dest="kaggle_command", required=True)

    s = sub.add_parser("stage", help="write kernel folder + dataset (wheel, optional weights); no network")
    s.add_argument("--out", default=None, help="folder to write (default outputs/kaggle)")
    s.add_argument("--run", default=None, help="run whose best.pt goes into the dataset")
    s.add_argument("--owner", default=None, help="Kaggle user name for <username> (default: KAGGLE_USERNAME or "
                                                  "kaggle.json)")
    s.add_argument("--no-weights", action="store_true", help="do not copy the run's checkpoint")
    s.add_argument("--extra-wheel", action="append", default=[], help="another wheel to install offline")
    s.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                   help="a 06_submission parameter baked into the notebook (value read as YAML)")
    s.set_defaults(func=_stage_cmd)

    s = sub.add_parser("push", help="upload the dataset and push the kernel with the kaggle CLI")
    s.add_argument("--dir", default=None, help="staged folder (default outputs/kaggle)")
    s.add_argument("--message", default="ffdv_utils update", help="dataset version notes")
    s.add_argument("--wait", type=float, default=600, help="seconds to wait for the dataset to be ready")
    s.set_defaults(func=_push_cmd)

    s = sub.add_parser("check", help="check a staged folder against the Kaggle CLI's rules (offline)")
    s.add_argument("--dir", default=None, help="staged folder (default outputs/kaggle)")
    s.set_defaults(func=_check_cmd)
    return p


def _run_sample_data(args: argparse.Namespace) -> int:
    """Entry point of the ``sample-data`` subcommand."""
    from ..sample_data.generate import make_sample_dataset

    res = make_sample_dataset(Path(args.out), n=args.n, seed=args.seed, progress=not args.quiet,
                              workers=args.workers)
    print(f"data root: {res['data_root']}")
    print(f"answers:   {res['answers_dir']}")
    return 1 if res["errors"] else 0


def add_sample_data_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``sample-data`` subcommand (``--out DIR [--n N] [--seed S]``) to an argparse subparsers object.

    Args:
        subparsers: The object returned by ``ArgumentParser.add_subparsers()``.

    Returns:
        The new subparser; its ``func`` default takes the parsed args and returns an exit code.
    """
    p = subparsers.add_parser("sample-data", help="write a small synthetic FFDV-layout dataset with answers",
                              description="Write synthetic talking-face clips (real and fake) in the FFDV layout: "
                                          "DIR/data is the data root, DIR/answers holds the test labels.")
    p.add_argument("--out", required=True, type=Path, help="output folder (gets data/ and answers/)")
    p.add_argument("--n", type=int, default=100, help="number of clips (default 100, at least 18)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_sample_data)
    return p


if __name__ == "__main__":
    warnings.simplefilter("default")
    sys.exit(main())
