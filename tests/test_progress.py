"""Progress reaches a person wherever the output goes: log.txt always, a bar on a terminal,
plain lines at a modest rate elsewhere; bar labels are short and human."""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path

import pytest
import torch
from lhotse import CutSet
from lhotse.dataset import SimpleCutSampler

from speechssl import progress
from speechssl.data.batching import CutDataset
from speechssl.evaluation import features
from speechssl.runs import start_run
from speechssl.training import TrainConfig, Trainer, seed_everything

sys.path.insert(0, str(Path(__file__).parent))
from train_toy import ToyModel, ToyObjective, make_cuts  # noqa: E402

STEP_LINE = re.compile(
    r"train: (\d+)/(\d+) steps, loss [-+\d.e]+, lr [-+\d.e]+, [\d.e+-]+ audio h/h"
)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(scope="module")
def cuts(tmp_path_factory) -> CutSet:
    return make_cuts(tmp_path_factory.mktemp("toy") / "audio", n=8)


def _fit(cuts, run: Path, steps: int = 6) -> None:
    config = TrainConfig(max_steps=steps, lr=1e-2, warmup_steps=1, log_every=2, ckpt_every=100,
                         num_workers=0)  # fmt: skip
    start_run(run, "toy", config)
    seed_everything(0)
    sampler = SimpleCutSampler(cuts, max_cuts=2, shuffle=True, drop_last=True)
    Trainer(ToyModel(), ToyObjective(noise=0.0), sampler, CutDataset(), config, run).fit()


def test_training_off_a_terminal_logs_every_step_line_and_prints_first_and_last(
    cuts, tmp_path, capsys
):
    """Was: log.txt held "started" and "saved" only, and stderr nothing (no bar off a TTY)."""
    assert not sys.stderr.isatty()  # pytest's capture
    _fit(cuts, tmp_path / "run")
    logged = [m.groups() for m in STEP_LINE.finditer((tmp_path / "run" / "log.txt").read_text())]
    assert [int(s) for s, _ in logged] == [2, 4, 6]  # every logged step (log_every=2)
    assert {t for _, t in logged} == {"6"}
    printed = [m.group(1) for m in STEP_LINE.finditer(capsys.readouterr().err)]
    assert printed == ["2", "6"]  # first and last; the rest waits for EVERY_S seconds


def test_every_step_line_off_a_terminal_when_every_s_is_zero(cuts, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(progress, "EVERY_S", 0.0)
    _fit(cuts, tmp_path / "run")
    err = capsys.readouterr().err
    assert [m.group(1) for m in STEP_LINE.finditer(err)] == ["2", "4", "6"]
    assert err.count("train: 6/6 steps") == 1  # the last step once, with its metrics
    assert "train: 1/6 steps, ETA" in err  # between logged steps: the count and the ETA


def test_training_on_a_terminal_shows_the_bar_and_no_plain_lines(cuts, tmp_path, monkeypatch):
    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    _fit(cuts, tmp_path / "run")
    shown = term.getvalue()
    assert "\r" in shown and "loss" in shown  # tqdm's bar with its status
    assert not STEP_LINE.search(shown)  # the plain lines are for files and pipes only
    assert len(STEP_LINE.findall((tmp_path / "run" / "log.txt").read_text())) == 3


def test_plain_lines_come_at_most_every_every_s(monkeypatch, capsys):
    now = [0.0]
    monkeypatch.setattr(progress, "_clock", lambda: now[0])
    bar = progress.Progress(100, "work", "item", every_s=10.0)
    assert bar.plain
    for _ in range(100):  # one item per second
        now[0] += 1.0
        bar.update()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 10 and lines[0] == "work: 10/100 items, ETA 1m30s"
    assert lines[-1] == "work: 100/100 items"  # no ETA once done


def test_note_goes_to_stderr_and_to_the_run_log(tmp_path, capsys):
    start_run(tmp_path / "run", "toy", TrainConfig())
    progress.note("stage 2: something long")
    assert capsys.readouterr().err == "stage 2: something long\n"
    assert "stage 2: something long" in (tmp_path / "run" / "log.txt").read_text()


def test_short_duration():
    assert [progress.short_duration(s) for s in (0.4, 59, 75, 3725)] == [
        "0s", "59s", "1m15s", "1h02m",
    ]  # fmt: skip


def test_probe_bar_label_is_short_and_not_the_cache_key(tmp_path, monkeypatch):
    """Was: ``features <resolved path>:<size>:<mtime>``, filling the line."""
    weights = tmp_path / "runs" / "mt4ssl" / "checkpoints" / "step-000150" / "model.safetensors"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"0" * 10)
    uid = f"{weights.resolve()}:10:1733000000123456789"
    labels = []

    class Recorder(progress.Progress):
        def __init__(self, total, desc, unit, **kw):
            labels.append(desc)
            super().__init__(total, desc, unit, **kw)

    class Upstream(torch.nn.Module):
        frame_rate = 100.0

        def forward(self, audio, lengths):
            frames = audio[:, : audio.shape[1] // 160 * 160].reshape(len(audio), -1, 160)
            mask = torch.ones(frames.shape[:2], dtype=torch.bool)
            return type("Out", (), {"hidden_states": [frames], "mask": mask})()

    monkeypatch.setattr(features, "Progress", Recorder)
    cut_list = list(make_cuts(tmp_path / "audio", n=2))
    features.extract_features(Upstream(), cut_list, tmp_path / "cache", uid)
    key = features.cache_key(uid, cut_list)
    assert labels == ["features of mt4ssl/step-000150"]
    assert key not in labels[0] and str(tmp_path) not in labels[0]
    assert features.upstream_label("fbank") == "fbank"
    hf = tmp_path / "wavlm-base"
    assert features.upstream_label(f"{hf / 'model.safetensors'}:1:2|{hf / 'x.bin'}:3:4") == (
        "wavlm-base"
    )
