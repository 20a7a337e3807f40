"""Labels and templates: what clips exist, in which split, with which label.

Label-file rule (``train_label.txt``, ``val_label.txt``): CSV, first line a header whose first two columns
are ``video_name`` and ``target`` (``label`` is accepted for ``target``); further columns are ignored. A BOM,
CRLF line ends, whitespace around cells and blank lines are tolerated. The text is UTF-8 (UTF-16 or UTF-32 with a
byte-order mark is read too); any other bytes are an error naming the file, line and byte. A missing header, a
target other than 0/1, an empty name or a name listed twice is an error naming the file and line. Names are matched
with or without the ``.mp4`` suffix.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import warnings
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from ..core.paths import SPLIT_DIRS, data_root_path, resolve_path

LABEL_FILES = {"train": "train_label.txt", "val": "val_label.txt"}
# a labelled folder: one pool of clips, no train / val split of its own (``data.groups`` makes them)
POOL_LABELS = "labels.csv"
POOL_CLIPS = "clips"
TARGET_COLUMNS = ("target", "label")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm")


class DataError(ValueError):
    """A label or template file that cannot be used; the message names the file and line."""


class DataWarning(UserWarning):
    """Something odd in the data that the run survives (names without files, files without labels)."""


_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def decode_text(raw: bytes, path: str | os.PathLike) -> str:
    """A label or template file's text: UTF-8, or UTF-8/16/32 with a byte-order mark, decoded strictly.

    Anything else is refused, naming the file, the line and the byte, and how to fix it: a name decoded wrongly
    would match no clip and be left out.
    """
    encoding = next((enc for bom, enc in _BOMS if raw.startswith(bom)), "utf-8")
    if encoding == "utf-8" and b"\x00" in raw:
        line = raw[: raw.index(b"\x00")].count(b"\n") + 1
        raise DataError(f"{path}:{line}: NUL bytes: the file looks like UTF-16 without a byte-order mark; "
                        "save it as UTF-8 (e.g. iconv -f UTF-16LE -t UTF-8)")
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1 if encoding.startswith("utf-8") else "?"
        byte = raw[exc.start: exc.start + 1].hex()
        if encoding.startswith("utf-8"):
            start = raw.rfind(b"\n", 0, exc.start) + 1
            end = raw.find(b"\n", exc.start)
            as_latin1 = raw[start: end if end >= 0 else len(raw)].decode("cp1252", errors="replace").strip()
            raise DataError(f"{path}:{line}: byte 0x{byte} at offset {exc.start} is not UTF-8 (read as Latin-1 the "
                            f"line is {as_latin1!r}); save the file as UTF-8, e.g. "
                            "iconv -f LATIN1 -t UTF-8 OLD > NEW") from None
        raise DataError(f"{path}: not valid {encoding.upper()} despite its byte-order mark (byte 0x{byte} at offset "
                        f"{exc.start}); save the file as UTF-8") from None


def _read_rows(path: Path) -> list[tuple[int, list[str]]]:
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    text = decode_text(raw, path)
    rows = []
    for lineno, row in enumerate(csv.reader(io.StringIO(text, newline="")), start=1):
        cells = [c.strip() for c in row]
        if not any(cells):
            continue  # blank or trailing lines
        rows.append((lineno, cells))
    return rows


def canonical_name(name: str) -> str:
    """File name as stored in the FFDV folders: the ``.mp4`` suffix is added when a name has no extension."""
    name = name.strip()
    return name if name.lower().endswith(VIDEO_EXTS) else name + ".mp4"


def read_labels(path: str | os.PathLike) -> pd.DataFrame:
    """``video_name,target`` rows of a label file, validated (see module docstring for the rule)."""
    path = Path(path)
    rows = _read_rows(path)
    if not rows:
        raise DataError(f"{path}:1: empty file; expected a header 'video_name,target'")
    lineno, header = rows[0]
    cols = [h.lower() for h in header]
    if len(cols) < 2 or cols[0] != "video_name" or cols[1] not in TARGET_COLUMNS:
        raise DataError(f"{path}:{lineno}: expected a header 'video_name,target' (or 'video_name,label'), "
                        f"found {','.join(header)!r}")
    names, targets, seen = [], [], {}
    for lineno, cells in rows[1:]:
        if len(cells) < 2:
            raise DataError(f"{path}:{lineno}: expected 2 columns 'video_name,target', found {len(cells)}")
        name, target = canonical_name(cells[0]), cells[1]
        if not cells[0]:
            raise DataError(f"{path}:{lineno}: empty video_name")
        if target not in ("0", "1", "0.0", "1.0"):
            raise DataError(f"{path}:{lineno}: target must be 0 (real) or 1 (fake), found {target!r}")
        if name in seen:
            raise DataError(f"{path}:{lineno}: {name} is listed twice (first at line {seen[name]})")
        seen[name] = lineno
        names.append(name)
        targets.append(int(float(target)))
    return pd.DataFrame({"video_name": names, "target": targets})


def read_template(path: str | os.PathLike) -> pd.DataFrame:
    """The rows to predict, in order: a CSV whose first column is ``video_name`` (other columns ignored)."""
    path = Path(path)
    rows = _read_rows(path)
    if not rows or rows[0][1][0].lower() != "video_name":
        where = f"{path}:{rows[0][0]}" if rows else f"{path}:1"
        raise DataError(f"{where}: expected a header starting with 'video_name'")
    names, seen = [], {}
    for lineno, cells in rows[1:]:
        if not cells[0]:
            raise DataError(f"{path}:{lineno}: empty video_name")
        name = canonical_name(cells[0])
        if name in seen:
            raise DataError(f"{path}:{lineno}: {name} is listed twice (first at line {seen[name]})")
        seen[name] = lineno
        names.append(name)
    return pd.DataFrame({"video_name": names, "template_name": [c[1][0] for c in rows[1:]]})


def list_videos(folder: Path) -> list[str]:
    """Video file names in a folder (not recursive), sorted."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTS)


def load_split(data_root: str | os.PathLike | None, split: str, warn: bool = True) -> pd.DataFrame:
    """Labelled clips of ``train`` or ``val``: video_name, target, path (labelled names with no file dropped)."""
    if split not in LABEL_FILES:
        raise DataError(f"unknown split {split!r}; expected one of {sorted(LABEL_FILES)}")
    root = data_root_path(data_root)
    labels = read_labels(root / LABEL_FILES[split])
    folder = root / SPLIT_DIRS[split]
    present = set(list_videos(folder))
    missing = [n for n in labels.video_name if n not in present]
    unlabelled = sorted(present - set(labels.video_name))
    if warn and missing:
        warnings.warn(f"{root / LABEL_FILES[split]}: {len(missing)} labelled clip(s) have no file in {folder} "
                      f"and are left out (first: {', '.join(missing[:5])})", DataWarning, stacklevel=2)
    if warn and unlabelled:
        warnings.warn(f"{folder}: {len(unlabelled)} file(s) have no label in {LABEL_FILES[split]} and are ignored "
                      f"(first: {', '.join(unlabelled[:5])})", DataWarning, stacklevel=2)
    df = labels[labels.video_name.isin(present)].reset_index(drop=True)
    df["path"] = [str(folder / n) for n in df.video_name]
    return df


def list_test(data_root: str | os.PathLike | None, test_dir: str = "testset",
              template: str | os.PathLike | None = None) -> pd.DataFrame:
    """The clips to predict: video_name, path, exists — template rows in order, or every video in test_dir."""
    root = data_root_path(data_root)
    folder = resolve_path(test_dir, base=root)
    if template:
        tpl_path = resolve_path(template, base=root)
        df = read_template(tpl_path)
    else:
        df = pd.DataFrame({"video_name": list_videos(folder)})
        df["template_name"] = df.video_name
    df["path"] = [str(folder / n) for n in df.video_name]
    df["exists"] = [Path(p).is_file() for p in df.path]
    return df


def labelled_frame(data_root: str | os.PathLike | None, splits: Iterable[str] = ("train", "val")) -> pd.DataFrame:
    """Train and val together with a ``split`` column."""
    parts = []
    for split in splits:
        df = load_split(data_root, split)
        df["split"] = split
        parts.append(df)
    return pd.concat(parts, ignore_index=True)


def subsample(labels: pd.DataFrame, max_clips: int | None, seed: int = 0) -> pd.DataFrame:
    """At most ``max_clips`` clips per split (random, seeded); all when ``max_clips`` is falsy."""
    if not max_clips:
        return labels
    parts = [g.sample(n=min(len(g), int(max_clips)), random_state=seed) for _, g in labels.groupby("split", sort=False)]
    return pd.concat(parts).reset_index(drop=True)


def pick_examples(labels: pd.DataFrame, n: int = 4, seed: int = 0) -> pd.DataFrame:
    """``n`` real and ``n`` fake clips (fewer if a class has fewer), reals first."""
    parts = [labels[labels.target == t].sample(n=min(n, int((labels.target == t).sum())), random_state=seed)
             for t in (0, 1)]
    return pd.concat(parts).reset_index(drop=True)


def clips_for_splits(data_root: str | os.PathLike | None, splits: Iterable[str] = ("train", "val", "test"),
                     test_dir: str = "testset", test_template: str | os.PathLike | None = None) -> pd.DataFrame:
    """video_name, path, split, exists (and target for labelled splits) for the requested splits."""
    parts = []
    for split in splits:
        if split == "test":
            df = list_test(data_root, test_dir, test_template)
            if df.empty:
                continue
            df = df.drop(columns=["template_name"])
        else:
            df = load_split(data_root, split)
            df["exists"] = True
        df["split"] = split
        parts.append(df)
    if not parts:
        return pd.DataFrame(columns=["video_name", "path", "split", "exists"])
    return pd.concat(parts, ignore_index=True)


def is_pool(data_root: Any) -> bool:
    """Whether ``data_root`` is a labelled folder (``labels.csv`` + ``clips/``) rather than an FFDV layout."""
    if data_root is None:
        return False
    root = data_root_path(data_root)
    return (root / POOL_LABELS).is_file() and (root / POOL_CLIPS).is_dir()


def pool_clips(data_root: Any) -> pd.DataFrame:
    """The clips of a labelled folder: video_name, target, path, split (``pool``), folder (``clips``).

    Labelled names with no file are left out with a warning naming the file; the label rule is the one of the
    FFDV label files (``data.labels.read_labels``: header, 0/1 targets, no name twice).
    """
    root = data_root_path(data_root)
    labels = read_labels(root / POOL_LABELS)
    folder = root / POOL_CLIPS
    present = {p.name for p in folder.iterdir() if p.is_file()}
    names = [n if n in present else (n + ".mp4" if n + ".mp4" in present else None) for n in labels.video_name]
    missing = [n for n, found in zip(labels.video_name, names) if found is None]
    if missing:
        warnings.warn(f"{root / POOL_LABELS}: {len(missing)} labelled clip(s) have no file in {folder} and are left "
                      f"out (first: {', '.join(missing[:5])})", stacklevel=2)
    df = labels.assign(video_name=names).dropna(subset=["video_name"]).reset_index(drop=True)
    df["path"] = [str(folder / n) for n in df.video_name]
    df["split"] = "pool"
    df["folder"] = POOL_CLIPS
    return df
