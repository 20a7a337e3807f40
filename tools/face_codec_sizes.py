"""Bytes per clip of a face cache's entries under each ``face_codec``, the pixel error and the time to encode and
decode (``features.cache.encode_crops`` / ``decode_crops``), from an existing (raw) face cache folder.

    python tools/face_codec_sizes.py --faces CACHE/faces-<hash> [--labels DATA/labels.csv]

``--labels``: a csv with a ``video_name`` column, to measure only those clips (default: every ``ok`` clip). Prints a
Markdown table: KB per clip as written (``.npz``), mean absolute error of the decoded face crops (0-255), encode and
decode milliseconds per clip on this process's one thread.
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ffdv_utils.features.cache import FaceStore, decode_crops, encode_crops

OPTIONS = [("raw", 0), ("png", 0), ("jpeg", 95), ("jpeg", 90), ("jpeg", 85), ("jpeg", 75), ("jpeg", 50)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--faces", type=Path, required=True, help="a faces-<hash> cache folder")
    ap.add_argument("--labels", type=Path, default=None, help="csv whose video_name column lists the clips")
    args = ap.parse_args(argv)
    store = FaceStore(args.faces)
    names = list(pd.read_csv(args.labels).video_name) if args.labels else store.names
    names = [n for n in names if store.status(n) == "ok"]
    size = {o: 0 for o in OPTIONS}
    err = {o: 0.0 for o in OPTIONS}
    enc = {o: 0.0 for o in OPTIONS}
    dec = {o: 0.0 for o in OPTIONS}
    for name in names:
        entry = store.entry(name)
        for opt in OPTIONS:
            t0 = time.perf_counter()
            stored = encode_crops(entry, *opt)
            buf = io.BytesIO()
            np.savez(buf, **stored)
            t1 = time.perf_counter()
            size[opt] += buf.tell()
            buf.seek(0)
            with np.load(buf) as z:
                back = decode_crops({k: z[k] for k in z.files})
            dec[opt] += time.perf_counter() - t1
            enc[opt] += t1 - t0
            err[opt] += float(np.abs(back["faces"].astype(np.int16) - entry["faces"]).mean())
    n = max(1, len(names))
    print(f"{len(names)} clips of {args.faces.name}\n")
    print("| stored as | KB per clip | of raw | mean abs error | encode ms | decode ms |")
    print("|---|---|---|---|---|---|")
    raw = size[OPTIONS[0]] / n
    for opt in OPTIONS:
        label = opt[0] if opt[0] != "jpeg" else f"jpeg q{opt[1]}"
        print(f"| {label} | {size[opt] / n / 1e3:.1f} | {size[opt] / n / raw:.3f} | {err[opt] / n:.2f} | "
              f"{enc[opt] / n * 1e3:.1f} | {dec[opt] / n * 1e3:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
