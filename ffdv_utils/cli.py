"""``python -m ffdv_utils <command>``: the workspace from a terminal or a Kaggle cell.

Commands: demo, pipeline, sample-data, train, score, bench, kaggle, probe.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from . import config


def _pipeline(args: argparse.Namespace) -> int:
    from .pipeline import run_pipeline, summary

    overrides = {k: config.parse_value(v) for k, v in args.param}
    folder = run_pipeline(args.run, args.data_root, args.file, overrides, args.only, progress=not args.quiet)
    summary(folder)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .pipeline import demo

    overrides = {k: config.parse_value(v) for k, v in args.param}
    demo(args.run, n=args.n, seed=args.seed, files=args.file, overrides=overrides)
    return 0


def _train(args: argparse.Namespace) -> int:
    from .train import main as train_main

    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    train_main(rest)
    return 0


def _score(args: argparse.Namespace) -> int:
    from .predict import score_table

    table = score_table(args.videos, args.run, device=args.device, tta=args.tta, progress=False)
    print("video_name,score")
    for name, s in zip(table.video_name, table.score):
        print(f"{name},{s:.6f}")
    for path, status in zip(args.videos, table.status):
        if status.startswith("fallback"):  # still scored (the fallback value), but the caller should know
            print(f"warning: {path}: {status}", file=sys.stderr)
    return 0


def _probe(args: argparse.Namespace) -> int:
    import pandas as pd

    from .data import media_index

    clips = pd.DataFrame({"video_name": [Path(v).name for v in args.videos], "path": [str(Path(v).resolve())
                                                                                     for v in args.videos]})
    print(media_index(clips, progress=False).drop(columns=["path", "stamp"], errors="ignore").to_csv(index=False))
    return 0


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--file", action="append", default=[], help="parameter YAML (repeatable, later wins)")
    p.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                   help="one parameter, value read as YAML (repeatable, wins over files)")


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

    p = sub.add_parser("demo", help="make the sample dataset and run the whole pipeline on it")
    p.add_argument("--run", default="demo")
    p.add_argument("--n", type=int, default=100, help="clips in the sample dataset")
    p.add_argument("--seed", type=int, default=0)
    _add_common(p)
    p.set_defaults(func=_demo)

    p = sub.add_parser("train", help="train from parameter files (also under torchrun)", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_train)

    p = sub.add_parser("score", help="the test API: print video_name,score for each file")
    p.add_argument("--run", required=True, help="run name or checkpoint (.pt) path")
    p.add_argument("--device", default="auto")
    p.add_argument("--tta", type=int, default=1)
    p.add_argument("videos", nargs="+")
    p.set_defaults(func=_score)

    p = sub.add_parser("probe", help="print the media index (duration, fps, size, audio) of video files")
    p.add_argument("videos", nargs="+")
    p.set_defaults(func=_probe)

    for module, hook in (("sample_data", "add_sample_data_parser"), ("bench", "add_bench_parser"),
                         ("kaggle", "add_kaggle_parser")):
        try:
            mod = __import__(f"ffdv_utils.{module}", fromlist=[hook])
        except ImportError as exc:
            if exc.name and exc.name.startswith("ffdv_utils"):
                continue
            raise
        if hasattr(mod, hook):
            getattr(mod, hook)(sub)
    return ap


def _user_errors() -> tuple[type, ...]:
    """Errors that mean "your input is wrong": one clear line, not a traceback. Only modules already imported
    are asked, so a light command (sample-data, bench extraction) never imports torch just to catch errors."""
    errors: list[type] = [config.ConfigError, FileNotFoundError]
    for module, name in (("data", "DataError"), ("models", "ModelRuleError"), ("predict", "SubmissionError"),
                         ("pipeline", "PipelineError")):
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
        if not isinstance(exc, _user_errors()):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    warnings.simplefilter("default")
    sys.exit(main())
