"""Where one mel worker's time goes, per clip: CPU milliseconds of each stage of ``features.extract._work`` on the
clips of a folder, in this process on one thread, the best of ``--passes`` passes (the short-clip profile).

    python tools/profile_mel_stages.py CLIPS_DIR [--passes 4]

Run it against another checkout with ``PYTHONPATH=OTHER_CHECKOUT python tools/profile_mel_stages.py ...`` to compare
two versions of the code on the same clips (alternate the runs: the machine's load moves every figure). Prints one
JSON line: stage -> ms per clip.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from ffdv_utils.core.files import atomic_write
from ffdv_utils.features import extract
from ffdv_utils.features.mel import mel_image
from ffdv_utils.features.params import mel_params
from ffdv_utils.media import decode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("clips", help="folder of .mp4 clips")
    ap.add_argument("--passes", type=int, default=4)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    threadpool_limits(1)  # one core, as one worker
    paths = [str(p) for p in sorted(Path(args.clips).glob("*.mp4"))]
    mp = mel_params({})
    tmp = Path(tempfile.mkdtemp(prefix="ffdv_profile_"))
    extract._init_worker("mel", mp, str(tmp / "work"), limit_threads=False, in_worker=False)
    # the audio-only codec whitelist (older versions named it privately)
    whitelist = getattr(decode, "audio_decoders", None) or getattr(decode, "_audio_decoders")
    options = {"codec_whitelist": whitelist()}
    audio = {p: decode.load_audio(p, mp["sr"], mp["max_seconds"]) for p in paths}
    images = {p: mel_image(audio[p], mp) for p in paths}
    count = [0]

    def open_probe(p: str) -> None:
        with av.open(p, options=options) as c:
            s = c.streams.audio[0]
            s.codec_context.sample_rate, s.duration

    def decode_only(p: str) -> None:
        with av.open(p, options=options) as c:
            for packet in c.demux(c.streams.audio[0]):
                packet.decode()

    def write(p: str) -> None:
        count[0] += 1
        atomic_write(tmp / "entries" / f"{count[0] % 256:02x}" / f"{count[0]}.npy", lambda f: np.save(f, images[p]))

    def work(p: str) -> None:
        count[0] += 1
        extract._work((f"clip{count[0]}", p))

    stages = {"open + probe (audio-only)": open_probe, "open + demux + decode, nothing kept": decode_only,
              "load_audio (open, decode, collect, soxr, trim)": lambda p: decode.load_audio(p, mp["sr"],
                                                                                          mp["max_seconds"]),
              "mel_image (STFT, filterbank, dB, uint8)": lambda p: mel_image(audio[p], mp),
              "load_audio + mel_image on its fresh output": lambda p: mel_image(
                  decode.load_audio(p, mp["sr"], mp["max_seconds"]), mp),
              "atomic .npy write": write, "_work (one whole clip)": work}
    best = {name: float("inf") for name in stages}
    run_key = "extract_mels, 1 worker, per clip (manifest, bar included)"
    best[run_key] = float("inf")
    for i in range(args.passes):
        for name, fn in stages.items():
            c0 = time.process_time()
            for p in paths:
                fn(p)
            best[name] = min(best[name], (time.process_time() - c0) / len(paths) * 1000)
        clips = pd.DataFrame({"video_name": [f"pass{i}-{j}" for j in range(5 * len(paths))], "path": paths * 5})
        c0 = time.process_time()
        extract.extract_mels(clips, {}, tmp / f"run{i}", workers=1, progress=False)
        best[run_key] = min(best[run_key], (time.process_time() - c0) / len(clips) * 1000)
    print(json.dumps({k: round(v, 3) for k, v in best.items()}))


if __name__ == "__main__":
    main()
