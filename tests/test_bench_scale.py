"""``python -m ffdv_utils bench scale`` (issue 26): N-clip roots of linked clips, per-stage figures at N and 4N, the
growth exponent and the projection. No timing is asserted: only that the figures are there and computed."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from ffdv_utils.bench import scale
from ffdv_utils.cli.main import build_parser
from ffdv_utils.sample_data.clips import make_clips


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root of 4 tiny labelled clips (2 real, 2 fake)."""
    root = tmp_path_factory.mktemp("scale_src")
    clips = make_clips(root / "trainset", 4, progress=False, shapes=[(96, 64, 1.0, 16000, 1)])
    rows = [f"{p.name},{i % 2}" for i, p in enumerate(clips)]
    (root / "train_label.txt").write_text("video_name,target\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return root


def test_make_root_links_clips_under_new_names(source: Path, tmp_path: Path) -> None:
    sizes = scale.make_root(source, tmp_path / "r", 10)
    assert sizes == {"train": 10, "val": 2, "test": 2}
    assert scale.make_root(source, tmp_path / "r2", 10, n_test=7)["test"] == 7
    train = sorted((tmp_path / "r" / "trainset").iterdir())
    assert len(train) == 10 and all(p.is_symlink() and p.resolve().parent == (source / "trainset").resolve()
                                    for p in train)
    labels = (tmp_path / "r" / "train_label.txt").read_text().splitlines()
    assert labels[0] == "video_name,target" and {r.split(",")[1] for r in labels[1:]} == {"0", "1"}
    val = (tmp_path / "r" / "val_label.txt").read_text().splitlines()[1:]
    assert {r.split(",")[1] for r in val} == {"0", "1"}  # both classes, or validation AUC is undefined
    assert (tmp_path / "r" / "test_template.csv").read_text().startswith("video_name,score\n")


def test_growth_table_exponent_and_flags() -> None:
    def fig(seconds: float, clips: int, rss: float) -> dict:
        return {"seconds": seconds, "clips": clips, "s_per_clip": seconds / clips, "cpu_s_per_clip": seconds / clips,
                "peak_tree_rss_mib": rss, "cache_bytes_per_clip": 1000.0}

    rows = scale.growth_table({"mel": fig(10, 100, 500), "faces": fig(10, 100, 500)},
                              {"mel": fig(40, 400, 550), "faces": fig(160, 400, 700)}, 100)
    mel, faces = rows
    assert mel["exponent"] == pytest.approx(1.0) and mel["flags"] == "ok"
    assert faces["exponent"] == pytest.approx(2.0) and faces["rss_ratio"] == pytest.approx(1.4)
    assert "exponent" in faces["flags"] and "RSS" in faces["flags"]


def test_bench_scale_runs_the_cheapest_stage_at_n_and_4n(source: Path, tmp_path: Path) -> None:
    res = scale.bench_scale(4, ["mel"], source=source, work=tmp_path / "w", out=tmp_path / "out", poll_s=0.2,
                            overrides={"feature_workers": 1}, test_clips=2, log=lambda *_: None)
    (row,) = res["growth"]
    assert row["stage"] == "mel" and (row["clips_n"], row["clips_4n"]) == (8, 27)  # 4 + 2 + 2, 16 + 3 + 8
    assert set(row) >= {"s_per_clip_n", "s_per_clip_4n", "exponent", "rss_mib_n", "rss_mib_4n", "rss_ratio",
                        "cache_kb_per_clip", "flags"}
    assert math.isfinite(row["exponent"]) and row["rss_mib_n"] > 0 and row["rss_mib_4n"] > 0
    assert row["cache_kb_per_clip"] > 0  # the mel images went into the fresh cache of that size
    table = scale.format_growth(res["growth"], 4)
    assert table.splitlines()[0].startswith("| stage | clips N / 4N | s/clip at N=4 | s/clip at 4N=16 | exponent")
    proj = res["projection"]
    assert [r["stage"] for r in proj["rows"]] == ["mel"] and proj["rows"][0]["clips"] == 350_000
    assert set(proj["totals"]) == {f"{k}_h" for k in ("this_machine", *scale.GPU_ASSUMPTIONS)}
    assert "assumed" in scale.format_projection(proj).lower()
    assert {p.name for p in (tmp_path / "out").iterdir()} >= {"scale.json", "growth.csv", "projection.csv"}


def test_cli_bench_scale_parses() -> None:
    args = build_parser().parse_args(["bench", "scale", "--n", "4", "--stages", "mel,faces"])
    assert args.n == 4 and args.stages == "mel,faces" and callable(args.func)
