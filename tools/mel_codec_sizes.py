"""Bytes per mel entry stored raw and as PNG (``mel_codec``), and encode / decode times, over a mel cache folder.

    python tools/mel_codec_sizes.py --mel CACHE/mel-<hash> [--mel CACHE/mel-<hash> ...]

Prints one row per folder: the preset, clips, mean KB per entry raw (the .npy as written) and as PNG (the .npy
holding the PNG bytes), their ratio, and milliseconds per clip to encode and decode. Nothing is written.
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np

from ffdv_utils.features.cache import MelStore, decode_mel, encode_mel


def npy_bytes(arr: np.ndarray) -> int:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getbuffer().nbytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mel", action="append", required=True, help="a mel cache folder (repeatable)")
    args = ap.parse_args()
    print("| folder | preset | clips | raw KB | png KB | png / raw | encode ms | decode ms |")
    print("|---|---|---|---|---|---|---|---|")
    for folder in args.mel:
        store = MelStore(folder)
        names = [n for n in store.names if store.has_audio(n)]
        raw, png, enc, dec = [], [], 0.0, 0.0
        for name in names:
            img = store.get(name)
            t0 = time.perf_counter()
            stored = encode_mel(img, "png")
            t1 = time.perf_counter()
            back = decode_mel(stored)
            t2 = time.perf_counter()
            if not np.array_equal(back, img):
                raise SystemExit(f"{folder}: {name} does not read back exactly")
            enc, dec = enc + t1 - t0, dec + t2 - t1
            raw.append(npy_bytes(img))
            png.append(npy_bytes(stored))
        n = max(1, len(names))
        print(f"| {store.root.name} | {store.params.get('preset')} | {len(names)} | {np.mean(raw) / 1e3:.1f} | "
              f"{np.mean(png) / 1e3:.1f} | {np.sum(png) / np.sum(raw):.3f} | {1e3 * enc / n:.2f} | {1e3 * dec / n:.2f} |")


if __name__ == "__main__":
    main()
