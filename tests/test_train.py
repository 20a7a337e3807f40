"""Training at speed and scale: the batched cache loader, determinism, resume after SIGKILL, DDP on CPU (gloo).

Tiny data (timm ``test_resnet``, 32x32 images), one CPU thread per process: the machine's cores are shared and
CPU kernels give bit-identical results only with a fixed thread count.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import default_collate

from ffdv_utils.core.device import amp_dtype
from ffdv_utils.core.runs import Run, load_run_params
from ffdv_utils.features.batches import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ClipDataset,
    batch_loader,
    clip_datasets,
    prepare_batch,
)
from ffdv_utils.models.registry import build_model
from ffdv_utils.training.evaluate import predict_loader
from ffdv_utils.training.loop import TRAIN_DEFAULTS, fit
from ffdv_utils.training.runtime import gather_predictions

HERE = Path(__file__).resolve().parent
TINY = {"model": "test_resnet", "image_size": 32, "batch_size": 8, "epochs": 2, "progress": False, "lr": 3.0e-3,
        "device": "cpu", "seed": 7}


def tiny_datasets(n_train: int = 48, n_val: int = 24, size: int = 32, seed: int = 0) -> tuple[ClipDataset,
                                                                                              ClipDataset]:
    """Mel-like uint8 images where fakes carry a brighter low band: learnable in a few steps, not trivially."""
    rng = np.random.default_rng(seed)

    def part(n: int, prefix: str) -> ClipDataset:
        y = (np.arange(n) % 2).astype(np.float32)
        rng.shuffle(y)
        mels = rng.integers(0, 140, (n, size, size)).astype(np.uint8)
        mels[y == 1, : size // 4] += rng.integers(20, 80, (int(y.sum()), 1, 1)).astype(np.uint8)
        return ClipDataset([f"{prefix}{i:03d}.mp4" for i in range(n)], y, mels=mels,
                           has_audio=rng.random(n) > 0.1)

    return part(n_train, "tr"), part(n_val, "va")


@pytest.fixture()
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _env(tmp_path: Path) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "FFDV_OUTPUTS": str(tmp_path / "out"),
            "PYTHONWARNINGS": "ignore"}


# ---------------------------------------------------------------------------------------------------------------
# loader


def test_get_batch_equals_collated_items():
    rng = np.random.default_rng(1)
    n = 30
    ds = ClipDataset([f"c{i}" for i in range(n)], rng.integers(0, 2, n), mels=rng.integers(0, 255, (n, 6, 9),
                                                                                           dtype=np.uint8),
                     has_audio=rng.random(n) > 0.3, faces=rng.integers(0, 255, (n, 2, 5, 5, 3), dtype=np.uint8),
                     av_swap_prob=0.5, seed=3)
    ds.set_epoch(4)
    idx = [17, 3, 29, 3, 0, 11]
    batch, ref = ds.get_batch(idx), default_collate([ds[i] for i in idx])
    assert set(batch) == set(ref)
    for k in ref:
        # NaN marks "no label" in some targets (target_sync for unswapped clips): NaN equals NaN here
        assert batch[k].dtype == ref[k].dtype and torch.allclose(batch[k].float(), ref[k].float(), rtol=0, atol=0,
                                                                equal_nan=True), k
    assert batch["mel"].shape == (6, 1, 6, 9) and batch["faces"].shape == (6, 2, 3, 5, 5)
    # the swap draws depend on the epoch: another epoch relabels other clips
    other = ds.get_batch(list(range(n)), epoch=5)["target"]
    assert not torch.equal(other, ds.get_batch(list(range(n)), epoch=4)["target"])


def test_batch_loader_order_is_reproducible_and_complete():
    ds, _ = tiny_datasets(37, 2)
    loader = batch_loader(ds, 8, shuffle=True, seed=5)

    def epoch_order(e: int) -> list[int]:
        loader.batch_sampler_.set_epoch(e)
        return torch.cat([b["index"] for b in loader]).tolist()

    e0, e1 = epoch_order(0), epoch_order(1)
    assert sorted(e0) == list(range(37)) and sorted(e1) == list(range(37))
    assert e0 != e1 and e0 == epoch_order(0)  # a new order per epoch, the same one when the epoch comes again
    assert len(loader) == 5
    tail = batch_loader(ds, 6, shuffle=True)  # 37 = 6 * 6 + 1: BatchNorm cannot train on the lone last item
    assert len(tail) == 6 and [len(b["index"]) for b in tail] == [6] * 6
    assert [len(b["index"]) for b in batch_loader(ds, 6)] == [6] * 6 + [1]  # evaluation keeps every item
    # training shards (DistributedSampler): padded to equal lengths, disjoint apart from the padding
    parts = []
    for r in range(3):
        shard = batch_loader(ds, 5, shuffle=True, seed=5, rank=r, world=3)
        shard.batch_sampler_.set_epoch(0)
        parts.append(torch.cat([b["index"] for b in shard]).tolist())
    assert {len(p) for p in parts} == {13} and set(sum(parts, [])) == set(range(37))
    # evaluation shards: every item exactly once
    val = [torch.cat([b["index"] for b in batch_loader(ds, 4, rank=r, world=3, pad=False)]).tolist()
           for r in range(3)]
    assert sorted(sum(val, [])) == list(range(37))


def test_persistent_workers_see_the_epoch():
    """set_epoch in the main process does not reach a persistent worker's copy: the epoch must travel along."""
    n = 16
    ds = ClipDataset([f"c{i}" for i in range(n)], np.zeros(n), mels=np.zeros((n, 4, 4), np.uint8),
                     av_swap_prob=0.5, seed=1)
    loader = batch_loader(ds, n, num_workers=1)
    for epoch in (0, 1, 2):
        ds.set_epoch(epoch)
        loader.batch_sampler_.set_epoch(epoch)
        got = next(iter(loader))["target"]
        assert torch.equal(got, ds.get_batch(list(range(n)), epoch=epoch)["target"])
    assert 0 < float(got.sum()) < n


def test_memmap_slice_pickles_as_a_reference(tmp_path):
    arr = np.lib.format.open_memmap(tmp_path / "m.npy", mode="w+", dtype=np.uint8, shape=(50, 32, 32))
    arr[:] = np.random.default_rng(0).integers(0, 255, arr.shape, dtype=np.uint8)
    arr.flush()
    del arr
    mm = np.load(tmp_path / "m.npy", mmap_mode="r")
    ds = ClipDataset([str(i) for i in range(30)], np.zeros(30), mels=mm[13:43])
    blob = pickle.dumps(ds)
    back = pickle.loads(blob)
    assert len(blob) < 5000 < mm[13:43].nbytes  # the file is reopened, not copied into every spawned worker
    assert isinstance(back.mels, np.memmap) and np.array_equal(back.mels, mm[13:43])


def test_prepare_batch_normalises_on_device():
    mel = torch.randint(0, 256, (3, 1, 5, 7), dtype=torch.uint8)
    out = prepare_batch({"mel": mel, "target": torch.tensor([0, 1, 1])}, "cpu", channels_last=True)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    ref = (mel.float().expand(-1, 3, -1, -1) / 255 - mean) / std
    assert out["mel"].shape == (3, 3, 5, 7) and out["target"].dtype == torch.float32
    assert torch.allclose(out["mel"], ref, atol=1e-5)
    assert out["mel"].is_contiguous(memory_format=torch.channels_last)


def test_amp_dtype_by_gpu_generation(monkeypatch):
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert amp_dtype("bf16", cpu) == torch.bfloat16 and amp_dtype("fp16", cpu) is None
    assert amp_dtype(False, cpu) is None
    monkeypatch.setattr("ffdv_utils.core.device.cpu_has_native_bf16", lambda: False)
    assert amp_dtype("auto", cpu) is None
    monkeypatch.setattr("ffdv_utils.core.device.cpu_has_native_bf16", lambda: True)
    assert amp_dtype("auto", cpu) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (7, 5))  # T4: bf16 only emulated
    assert amp_dtype("auto", gpu) == torch.float16
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (9, 0))  # H100
    assert amp_dtype("auto", gpu) == torch.bfloat16
    assert amp_dtype("fp16", gpu) == torch.float16 and amp_dtype(False, gpu) is None


def test_score_layers_stay_float32_under_autocast():
    """bf16 logits would tie thousands of test clips; the logit layers compute in float32 under autocast."""
    from ffdv_utils.models.layers import ScoreLinear

    torch.manual_seed(0)
    lin = ScoreLinear(64, 1)
    x = torch.randn(512, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = lin(x)
        plain = torch.nn.Linear(64, 1)
        plain.load_state_dict(lin.state_dict())
        coarse = plain(x)
    assert out.dtype == torch.float32 and coarse.dtype == torch.bfloat16
    assert torch.allclose(out, x @ lin.weight.T + lin.bias, atol=1e-5)
    assert len(torch.unique(out)) > len(torch.unique(coarse.float()))  # bf16 collapses many scores together


def test_gather_predictions_sorts_by_index():
    idx, s = gather_predictions(np.array([4, 0, 2]), np.array([0.4, 0.0, 0.2]))
    assert idx.tolist() == [0, 2, 4] and s.tolist() == [0.0, 0.2, 0.4]


# ---------------------------------------------------------------------------------------------------------------
# determinism and resume


def _fit(tmp_path: Path, name: str, data: tuple[int, int] = (48, 24), **over) -> tuple[dict, pd.DataFrame]:
    tr, va = tiny_datasets(*data)
    p = {**TRAIN_DEFAULTS, **TINY, "run_name": name, **over}
    run = Run(name=name, dir=tmp_path / name, params=p)
    result = fit(p, run, tr, va)
    return result, pd.read_csv(run.path("history.csv"))


def _comparable(history: pd.DataFrame) -> pd.DataFrame:
    return history.drop(columns=["train_time_s", "images_per_s", "data_wait_s", "loader_share", "pseudo_embed_s"])


@pytest.mark.slow
def test_same_seed_same_metrics(tmp_path, one_thread):
    over = {"augment": "spec", "mixup_alpha": 0.4, "av_swap_prob": 0.2}  # every random draw the loop makes
    r1, h1 = _fit(tmp_path, "a", **over)
    r2, h2 = _fit(tmp_path, "b", **over)
    r3, h3 = _fit(tmp_path, "c", **over, seed=8)
    pd.testing.assert_frame_equal(_comparable(h1), _comparable(h2), check_exact=True)  # identical, not close
    assert {k: v for k, v in r1.items() if k.startswith("val_")} == {k: v for k, v in r2.items()
                                                                      if k.startswith("val_")}
    assert not np.allclose(h1.train_loss, h3.train_loss)  # the seed does matter
    assert len(h1) == 2 and h1.loader_share.between(0, 1).all()
    assert (tmp_path / "a" / "checkpoints" / "best.pt").is_file()


_SCRIPT = """
import json, os, sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
sys.path.insert(0, {here!r})
from test_train import tiny_datasets
from ffdv_utils.core.runs import Run
from ffdv_utils.core.schema import TRAIN_DEFAULTS
import ffdv_utils.training.loop as loop
from ffdv_utils.training.loop import fit
cfg = json.loads(sys.argv[1])
run_dir = Path(cfg.pop("run_dir"))
if cfg.pop("stop_after_first_checkpoint"):
    save = loop.save_checkpoint

    def save_then_wait(obj, path):  # the event the test waits for: last.pt of the first epoch is on disk
        save(obj, path)
        if path.name == "last.pt":
            os.write(1, f"\\nCHECKPOINT {{obj['epoch']}}\\n".encode())  # one write, on a line of its own
            time.sleep(3600)  # until the test kills this process

    loop.save_checkpoint = save_then_wait
if cfg.pop("wait_for_go"):
    sys.stdin.readline()  # started early so that its imports are off the test's critical path
tr, va = tiny_datasets(cfg.pop("n_train"), cfg.pop("n_val"))
p = dict(TRAIN_DEFAULTS, **cfg)
fit(p, Run(name=p["run_name"], dir=run_dir, params=p), tr, va)
"""


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted(tmp_path, one_thread):
    script = tmp_path / "fit_tiny.py"
    script.write_text(_SCRIPT.format(here=str(HERE)))
    epochs = 4
    base = {**TINY, "epochs": epochs, "step_size": 2, "augment": "spec", "mixup_alpha": 0.4, "n_train": 64,
            "n_val": 32}

    def launch(name: str, wait: bool = False) -> subprocess.Popen:
        cfg = {**base, "run_name": name, "run_dir": str(tmp_path / name), "wait_for_go": wait,
               "stop_after_first_checkpoint": not wait}
        return subprocess.Popen([sys.executable, str(script), json.dumps(cfg)], env=_env(tmp_path), text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    killed, resumed = launch("killed"), launch("killed", wait=True)
    try:
        # the uninterrupted reference, here while the subprocesses start (one thread each, like them)
        _fit(tmp_path, "whole", **{k: v for k, v in base.items() if k not in ("n_train", "n_val")},
             data=(base["n_train"], base["n_val"]))
        last = tmp_path / "killed" / "checkpoints" / "last.pt"
        seen = []  # wait for the event (the first last.pt written), not for a time: a busy machine only delays it
        for line in killed.stdout:
            seen.append(line)
            if line.startswith("CHECKPOINT "):
                break
        assert seen and seen[-1].startswith("CHECKPOINT "), "".join(seen)
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait(10)
        done = torch.load(last, map_location="cpu", weights_only=False)["epoch"]  # 0-based, completed
        assert done == 0 == int(seen[-1].split()[1])
        assert not (tmp_path / "killed" / "metrics.json").exists()
        out, _ = resumed.communicate("go\n", timeout=120)
        assert resumed.returncode == 0, out
    finally:
        for proc in (killed, resumed):
            if proc.poll() is None:
                proc.kill()
    m_whole = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    m_res = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    assert m_whole["resumed_from_epoch"] == 0 and m_res["resumed_from_epoch"] == done + 1
    h_whole = pd.read_csv(tmp_path / "whole" / "history.csv")
    h_res = pd.read_csv(tmp_path / "killed" / "history.csv")
    assert h_res.epoch.tolist() == list(range(1, epochs + 1))
    pd.testing.assert_frame_equal(_comparable(h_res), _comparable(h_whole), check_exact=True)
    assert {k: v for k, v in m_res.items() if k.startswith("val_") or k == "best_epoch"} == \
        {k: v for k, v in m_whole.items() if k.startswith("val_") or k == "best_epoch"}
    s_whole = pd.read_csv(tmp_path / "whole" / "val_predictions.csv")
    s_res = pd.read_csv(tmp_path / "killed" / "val_predictions.csv")
    pd.testing.assert_frame_equal(s_res, s_whole, check_exact=True)


@pytest.mark.slow
def test_raising_epochs_extends_a_finished_run(tmp_path, one_thread):
    """`epochs` is not part of the resume key: a finished 2-epoch run asked for 3 trains one more epoch, and the
    result is exactly the uninterrupted 3-epoch run."""
    _, h2 = _fit(tmp_path, "extended", epochs=2)
    r3, h3 = _fit(tmp_path, "extended", epochs=3)
    assert r3["resumed_from_epoch"] == 2 and h3.epoch.tolist() == [1, 2, 3]
    pd.testing.assert_frame_equal(h3.iloc[:2], h2, check_exact=True)  # the finished epochs kept, timings too
    r_whole, h_whole = _fit(tmp_path, "whole3", epochs=3)
    assert r_whole["resumed_from_epoch"] == 0
    pd.testing.assert_frame_equal(_comparable(h3), _comparable(h_whole), check_exact=True)
    assert {k: v for k, v in r3.items() if k.startswith("val_") or k == "best_epoch"} == \
        {k: v for k, v in r_whole.items() if k.startswith("val_") or k == "best_epoch"}


@pytest.mark.slow
def test_a_changed_parameter_starts_from_scratch(tmp_path, one_thread, capsys):
    """A `last.pt` written with another learning rate is not resumed: the run starts again and equals a fresh one."""
    _fit(tmp_path, "changed", epochs=2)
    capsys.readouterr()
    r, h = _fit(tmp_path, "changed", epochs=2, lr=1.0e-3)
    assert "was written with other parameters; starting from scratch" in capsys.readouterr().out
    assert r["resumed_from_epoch"] == 0 and h.epoch.tolist() == [1, 2]
    _, fresh = _fit(tmp_path, "fresh", epochs=2, lr=1.0e-3)
    pd.testing.assert_frame_equal(_comparable(h), _comparable(fresh), check_exact=True)
    saved = torch.load(tmp_path / "changed" / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    assert saved["params"]["lr"] == 1.0e-3 and saved["epoch"] == 1


# ---------------------------------------------------------------------------------------------------------------
# DDP on the CPU: torchrun, 2 processes, gloo, the real command line on a tiny data root


def _tiny_data_root(root: Path) -> Path:
    from ffdv_utils.sample_data.clips import make_clip

    for split, folder, n in (("train", "trainset", 12), ("val", "valset", 7)):
        names = [f"{split}_{i:02d}.mp4" for i in range(n)]
        for i, name in enumerate(names):
            make_clip(root / folder / name, seconds=0.5, width=32, height=32, fps=8, seed=i + (100 if split == "val"
                                                                                               else 0),
                      face=False, silent=(i % 3 == 2))
        pd.DataFrame({"video_name": names, "target": [i % 2 for i in range(n)]}).to_csv(
            root / f"{split}_label.txt", index=False)
    return root


def _train_command(launcher: list[str], data: Path, params: Path, run_name: str) -> list[str]:
    """``torchrun LAUNCHER -m ffdv_utils.train ...`` on the tiny data root with the tiny parameters."""
    over = {**TINY, "batch_size": 4, "feature_workers": 1}
    cmd = [sys.executable, "-m", "torch.distributed.run", *launcher,
           "-m", "ffdv_utils.train", "--data-root", str(data), "--run-name", run_name, "-f", str(params)]
    for k, v in over.items():
        cmd += ["-p", k, json.dumps(v)]
    return cmd


def _tiny_params(tmp_path: Path) -> Path:
    params = tmp_path / "tiny.yaml"
    params.write_text("epochs: 2\nmax_train_clips: 10\n")  # also checks that -f reaches the script
    return params


def _check_ddp_run(run: Path, data: Path, env: dict, monkeypatch: pytest.MonkeyPatch, world: int) -> None:
    """What a DDP run on the tiny data root must have left: ``world`` processes, each validation clip scored once
    and as one process scores it with best.pt, and a run the notebook resumes without training again."""
    metrics = json.loads((run / "metrics.json").read_text())
    history = pd.read_csv(run / "history.csv")
    assert metrics["world_size"] == world and len(history) == 2
    assert (history.images_per_s > 0).all()
    val = pd.read_csv(run / "val_predictions.csv")
    assert sorted(val.video_name) == [f"val_{i:02d}.mp4" for i in range(7)]  # each clip once, from both shards
    # the gathered scores are what one process scoring the whole validation set with best.pt gets
    best = torch.load(run / "checkpoints" / "best.pt", map_location="cpu", weights_only=False)
    p = {**best["params"], "data_root": str(data)}
    monkeypatch.setenv("FFDV_OUTPUTS", env["FFDV_OUTPUTS"])  # the same feature cache
    model = build_model(p)
    model.load_state_dict(best["model"])
    _, val_ds = clip_datasets(p, ("mel",), progress=False)
    cpu = torch.device("cpu")  # with the run's own precision (bf16 autocast where the CPU has it natively)
    idx, scores = predict_loader(model, batch_loader(val_ds, 64), cpu, amp_dtype(p["amp"], cpu))
    single = pd.DataFrame({"video_name": [val_ds.names[i] for i in idx], "score": scores})
    merged = val.merge(single, on="video_name", suffixes=("", "_single"))
    assert len(merged) == 7
    np.testing.assert_allclose(merged.score, merged.score_single, rtol=0, atol=1e-5)
    assert metrics["val_n"] == 7
    # the notebook afterwards (one process, data root found its own way): resumes the finished run, only evaluates
    again = fit({**load_run_params(run), "data_root": f"{data}/", "progress": False},
                      Run(name=run.name, dir=run))
    assert again["resumed_from_epoch"] == 2 and again["best_epoch"] == metrics["best_epoch"]
    assert again["val_log_loss"] == pytest.approx(metrics["val_log_loss"], abs=1e-6)


@pytest.mark.slow
def test_ddp_two_processes_on_cpu(tmp_path, one_thread, monkeypatch):
    data = _tiny_data_root(tmp_path / "data")
    cmd = _train_command(["--standalone", "--nproc_per_node=2"], data, _tiny_params(tmp_path), "ddp")
    env = _env(tmp_path)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    _check_ddp_run(tmp_path / "out" / "ddp", data, env, monkeypatch, world=2)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_two_nodes_on_cpu(tmp_path, one_thread, monkeypatch):
    """Two torchrun launches as two machines (docs/training.md, "Several machines"): one process per node, joined by
    torchrun's c10d rendezvous on this machine's address; they share the outputs folder (the shared file system
    case) and train one run together, which must be what the single-node DDP run is."""
    data = _tiny_data_root(tmp_path / "data")
    params = _tiny_params(tmp_path)
    env = _env(tmp_path)
    endpoint = f"127.0.0.1:{_free_port()}"
    procs = []
    for node_rank in (0, 1):
        launcher = ["--nnodes=2", "--nproc_per_node=1", f"--node_rank={node_rank}", "--rdzv_backend=c10d",
                    f"--rdzv_endpoint={endpoint}", "--rdzv_id=ffdv-two-nodes", "--rdzv_conf=join_timeout=120"]
        procs.append(subprocess.Popen(_train_command(launcher, data, params, "nodes"), env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=240))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, out[-3000:] + err[-3000:]
    _check_ddp_run(tmp_path / "out" / "nodes", data, env, monkeypatch, world=2)


# ---------------------------------------------------------------------------------------------------------------
# benchmark


def test_train_targets_judged_on_figures():
    from ffdv_utils.bench.training import train_targets

    fig = {"workspace_vs_memory_step": 1.2, "speedup": 2.5, "workspace_img_s": 9000.0}
    cpu = train_targets(fig, "resnet18", 256, gpu=False)
    assert (cpu["cpu_2x_baseline"]["met"], cpu["loader_within_10pct"]["met"]) == (True, False)
    gpu = train_targets(fig, "resnet18", 256, gpu=True)
    assert gpu["gpu_10k_img_s"]["met"] is False and "cpu_2x_baseline" not in gpu


@pytest.mark.slow
def test_bench_train_tiny(one_thread, capsys):
    from ffdv_utils.bench.training import bench_train
    from ffdv_utils.cli.main import build_parser

    r = bench_train(model="test_resnet", image_size=32, batch=4, steps=2, warmup=1, progress=False)
    for key in ("baseline_img_s", "workspace_img_s", "memory_img_s", "baseline_loader_img_s",
                "workspace_loader_img_s"):
        assert r[key] > 0, key
    assert r["speedup"] == pytest.approx(r["workspace_img_s"] / r["baseline_img_s"])
    assert 0 <= r["workspace_loader_share"] < 1 and 0 <= r["baseline_loader_share"] < 1
    # the speed-up is a timing figure (a busy machine moves it); what it is made of is checked by events below
    assert r["loader_speedup"] == pytest.approx(r["workspace_loader_img_s"] / r["baseline_loader_img_s"])
    assert r["workspace_vs_memory_step"] == pytest.approx(r["workspace_step_s"] / r["memory_step_s"])
    assert set(r["targets"]) == {"loader_within_10pct"}  # the speed targets are for resnet18 at 256 only
    args = build_parser().parse_args(["bench", "train", "--model", "test_resnet", "--steps", "1", "--batch", "2",
                                      "--image-size", "16", "--quiet"])
    assert args.func(args) == 0  # `python -m ffdv_utils bench train ...` reaches bench_train
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last)["model"] == "test_resnet"


def test_workspace_loader_slices_the_memory_map_once_per_batch_and_opens_no_file(tmp_path, monkeypatch):
    """Why the workspace's loader is faster than the baseline's (bench train): one read of the memory map per batch
    and no image file, where the baseline opens and decodes one JPEG per item. Counted, not timed."""
    from PIL import Image

    import ffdv_utils.features.batches as B
    from ffdv_utils.bench.training import BaselineJpegDataset, synthetic_mels, write_jpegs

    n, batch = 12, 4
    mels = synthetic_mels(n, 32, 32)
    jpegs = write_jpegs(mels, tmp_path / "jpeg")
    np.save(tmp_path / "mels.npy", mels)
    cache = np.load(tmp_path / "mels.npy", mmap_mode="r")
    opened, reads = [], []
    real_open, real_take = Image.open, B._take_rows
    monkeypatch.setattr(Image, "open", lambda fp, *a, **k: opened.append(str(fp)) or real_open(fp, *a, **k))
    monkeypatch.setattr(B, "_take_rows", lambda arr, idx: reads.append((arr, len(idx))) or real_take(arr, idx))

    ds = ClipDataset([f"{i:06d}.mp4" for i in range(n)], np.zeros(n), mels=cache)
    got = list(batch_loader(ds, batch, shuffle=True, seed=0))
    assert len(got) == n // batch and not opened
    assert [k for _, k in reads] == [batch] * (n // batch) and all(a is cache for a, _ in reads)
    for b in got:  # and the slices are the cached images themselves
        assert torch.equal(b["mel"][:, 0], torch.from_numpy(mels[b["index"].numpy()]))

    reads.clear()
    base = torch.utils.data.DataLoader(BaselineJpegDataset(jpegs, np.zeros(n), 32), batch_size=batch)
    assert sum(len(y) for _, y in base) == n
    assert sorted(opened) == sorted(jpegs) and not reads  # one file opened per item


def test_the_real_only_settings_do_not_restart_a_finished_training() -> None:
    """The real-only score is fitted after training: its weight or groups changing must not throw the trained
    model away (a 05 rerun with another weight resumes with nothing to train), while a training setting must."""
    from ffdv_utils.core.config import params_hash
    from ffdv_utils.core.schema import TRAIN_DEFAULTS
    from ffdv_utils.training.loop import _train_key

    base = dict(TRAIN_DEFAULTS)
    key = params_hash(_train_key(base))
    assert params_hash(_train_key({**base, "real_only_weight": 0.9, "real_only_groups": ["sync"]})) == key
    assert params_hash(_train_key({**base, "lr": 1.0e-4})) != key
    assert params_hash(_train_key({**base, "pseudo_local": 0.5})) != key
