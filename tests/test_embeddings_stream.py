"""Frozen-backbone embeddings are streamed (issue 26): ``embed_dataset`` returns a memory-mapped stack written chunk
by chunk, never every clip's embedding in memory at once, and never a stale stack after an entry is recomputed."""

from __future__ import annotations

import io
import os
import pickle
import tracemalloc
from pathlib import Path

import numpy as np
import torch

from ffdv_utils.core.files import atomic_write
from ffdv_utils.features import embeddings as emb
from ffdv_utils.features.batches import ClipDataset
from ffdv_utils.features.cache import entry_file


class TinyBackbone(torch.nn.Module):
    """(B, 3, H, W) -> (B, 4): a frozen stand-in for a pretrained backbone."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.mean(dim=(2, 3)))


def _mel_dataset(n: int = 10) -> ClipDataset:
    rng = np.random.default_rng(0)
    mels = rng.integers(0, 255, (n, 8, 8), np.uint8)
    return ClipDataset([f"clip{i:03d}.mp4" for i in range(n)], np.zeros(n), mels=mels)


def _save(path: Path, arr: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, arr.astype(np.float16))
    atomic_write(path, buf.getvalue())


def test_embed_dataset_returns_a_read_only_memory_map_of_the_entries(tmp_path: Path) -> None:
    ds = _mel_dataset()
    out = emb.embed_dataset(ds, "mel", TinyBackbone(), tmp_path, batch_size=3, progress=False)
    assert isinstance(out, np.memmap) and out.mode == "r" and out.dtype == np.float16 and out.shape == (10, 4)
    per_entry = np.stack([np.load(tmp_path / "entries" / entry_file(n, ".npy")) for n in ds.names])
    assert np.array_equal(np.asarray(out), per_entry)
    # a second call with nothing missing reads the same stack back (one stack file, not a new one)
    again = emb.embed_dataset(ds, "mel", TinyBackbone(), tmp_path, progress=False)
    assert np.array_equal(np.asarray(again), per_entry) and len(list(tmp_path.glob("stacks/*.npy"))) == 1
    # a dataset holding the stack pickles as a reference to the file (a spawned loader worker reopens it)
    ds.embeddings = {"mel_emb": again}
    assert not isinstance(ds.__getstate__()["embeddings"]["mel_emb"], np.ndarray)
    back = pickle.loads(pickle.dumps(ds))
    assert isinstance(back.embeddings["mel_emb"], np.memmap)
    assert np.array_equal(np.asarray(back.embeddings["mel_emb"]), per_entry)


def test_a_recomputed_entry_is_never_read_from_an_old_stack(tmp_path: Path) -> None:
    ds = _mel_dataset(6)
    first = np.array(emb.embed_dataset(ds, "mel", TinyBackbone(), tmp_path, progress=False))
    path = tmp_path / "entries" / entry_file(ds.names[2], ".npy")
    new = np.full(4, 7.0, np.float16)
    _save(path, new)  # what a recomputation does: the entry rewritten (atomically), same size, new file
    out = emb.embed_dataset(ds, "mel", TinyBackbone(), tmp_path, progress=False)
    assert np.array_equal(np.asarray(out[2]), new) and not np.array_equal(first[2], new)
    assert np.array_equal(np.asarray(out[[0, 1, 3, 4, 5]]), first[[0, 1, 3, 4, 5]])
    # even when the rewrite keeps the inode, size and a coarse timestamp, a changed modification time counts
    st = os.stat(path)
    newer = np.full(4, -3.0, np.float16)
    with open(path, "r+b") as fh:  # rewritten in place
        buf = io.BytesIO()
        np.save(buf, newer)
        fh.write(buf.getvalue())
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert np.array_equal(np.asarray(emb.embed_dataset(ds, "mel", TinyBackbone(), tmp_path, progress=False)[2]), newer)


def test_embed_dataset_never_holds_every_row_in_memory(tmp_path: Path, monkeypatch) -> None:
    """1,000 cached entries of 8 KB (8 MB in all), copied 64 KB at a time: the peak of Python-tracked memory stays far
    below the stack's size (stacking every entry, as before, holds the list of entries and the stack: 16 MB)."""
    n, shape = 1000, (16, 256)
    names = [f"c{i:05d}.mp4" for i in range(n)]
    for i, name in enumerate(names):
        _save(tmp_path / "entries" / entry_file(name, ".npy"), np.full(shape, i % 97, np.float16))
    monkeypatch.setattr(emb, "STACK_CHUNK_BYTES", 64 << 10, raising=False)
    ds = ClipDataset(names, np.zeros(n))  # every entry is cached: the backbone is never called

    class Unused(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise AssertionError("nothing to compute")

    stack_bytes = n * int(np.prod(shape)) * 2
    tracemalloc.start()
    try:
        out = emb.embed_dataset(ds, "faces", Unused(), tmp_path, progress=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.shape == (n, *shape) and float(out[123, 0, 0]) == 123 % 97 and float(out[-1, -1, -1]) == (n - 1) % 97
    assert peak < stack_bytes / 4, f"peak {peak / 2**20:.1f} MiB for a {stack_bytes / 2**20:.1f} MiB stack"


def test_only_the_most_recently_used_stacks_are_kept(tmp_path: Path, monkeypatch) -> None:
    """Every list of clips makes a stack: superseded ones must not pile up (the mel cache's packed stacks did)."""
    monkeypatch.setattr(emb, "STACKS_KEPT", 3, raising=False)
    ds = _mel_dataset(8)
    emb.embed_dataset(ds, "mel", TinyBackbone(), tmp_path, progress=False)
    first = emb.embed_dataset(ClipDataset(ds.names[:2], np.zeros(2), mels=ds.mels[:2]), "mel", TinyBackbone(), tmp_path,
                              progress=False)
    outs = []
    for k in range(3, 8):  # five more lists of clips
        sub = ClipDataset(ds.names[:k], np.zeros(k), mels=ds.mels[:k])
        outs.append(emb.embed_dataset(sub, "mel", TinyBackbone(), tmp_path, progress=False))
    assert len(list((tmp_path / "stacks").glob("stack-*.npy"))) == 3
    # arrays already handed out stay readable after their file was removed
    assert first.shape == (2, 4) and np.isfinite(np.asarray(first, np.float32)).all()
    assert np.array_equal(np.asarray(outs[-1][:2]), np.asarray(first))
