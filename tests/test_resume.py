"""Kill -9 in the middle of training, resume, and end with exactly the same weights.

Also for random data pipelines: DINO's multi-crop views with augmentation, and the
pretraining crops, whose randomness the trainer derives from the batch's position (seed, rank,
epoch, index), so a resumed run draws what the uninterrupted one drew.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from speechssl.data.batching import CutDataset
from speechssl.errors import UserError
from speechssl.training import TrainConfig, Trainer, find_latest
from speechssl.training.checkpoint import load_checkpoint

sys.path.insert(0, str(Path(__file__).parent))
from train_toy import ToyModel, ToyObjective, make_cuts  # noqa: E402

SCRIPT = Path(__file__).parent / "train_toy.py"
STEPS = 24


def _cmd(cuts: Path, run: Path, *extra: str) -> list[str]:
    return [sys.executable, str(SCRIPT), "--cuts", str(cuts), "--run-dir", str(run),
            "--max-steps", str(STEPS), "--ckpt-every", "4", *extra]  # fmt: skip


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.fixture(scope="module")
def cuts_file(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("toy")
    path = d / "cuts.jsonl.gz"
    make_cuts(d / "audio", n=10).to_file(path)  # 10 cuts / batch 2: epochs roll over mid-run
    return path


@pytest.fixture(scope="module")
def uninterrupted(cuts_file, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("a") / "run"
    subprocess.run(_cmd(cuts_file, run), check=True, env=_env(), timeout=120)
    return run


def _kill_mid_run(cmd: list[str], run: Path, after: tuple[str, ...]) -> str:
    """Start ``cmd`` and SIGKILL it a little after ``latest`` names one of ``after``."""
    proc = subprocess.Popen(cmd, env=_env())
    latest = run / "checkpoints" / "latest"
    deadline = time.monotonic() + 90
    killed_at = None
    while time.monotonic() < deadline and proc.poll() is None:
        if latest.is_file() and latest.read_text().strip() in after:
            time.sleep(0.12)
            os.kill(proc.pid, signal.SIGKILL)
            killed_at = latest.read_text().strip()
            break
        time.sleep(0.01)
    proc.wait(timeout=30)
    assert killed_at is not None and proc.returncode == -signal.SIGKILL, "not killed mid-run"
    assert not (run / "final-rank0.safetensors").exists()
    return killed_at


def _assert_same_run(a_run: Path, b_run: Path, steps: int) -> None:
    """Bit-identical final and checkpointed weights, and each step logged exactly once."""
    a = load_file(a_run / "final-rank0.safetensors")
    b = load_file(b_run / "final-rank0.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    a = load_file(a_run / "checkpoints" / f"step-{steps:06d}" / "model.safetensors")
    b = load_file(b_run / "checkpoints" / f"step-{steps:06d}" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    logged = [int(x.split('"step": ')[1].split(",")[0]) for x in (b_run / "metrics.jsonl").open()]
    assert logged == list(range(1, steps + 1))


def test_sigkill_then_resume_is_bit_identical(cuts_file, uninterrupted, tmp_path):
    run = tmp_path / "run"
    # Kill after the second (or third) checkpoint, mid-epoch, between checkpoints.
    _kill_mid_run(_cmd(cuts_file, run, "--sleep", "0.05"), run, ("step-000008", "step-000012"))
    subprocess.run(_cmd(cuts_file, run, "--resume"), check=True, env=_env(), timeout=120)
    _assert_same_run(uninterrupted, run, STEPS)


RANDOM_STEPS = 8
RANDOM_DATA = {  # method: extra arguments (the pretraining crops come from 2 workers)
    "dino": ["--method", "dino"],
    "pretrain": ["--method", "pretrain", "--workers", "2"],
}


@pytest.fixture(scope="module")
def longer_cuts(tmp_path_factory) -> Path:
    """10 cuts of 0.3 s: DINO crops 0.1 s local views and repeats them for 0.35 s global ones."""
    d = tmp_path_factory.mktemp("longer")
    make_cuts(d / "audio", n=10, seconds=0.3).to_file(d / "cuts.jsonl.gz")
    return d / "cuts.jsonl.gz"


def _random_cmd(method: str, cuts: Path, run: Path, *extra: str) -> list[str]:
    return [sys.executable, str(SCRIPT), "--cuts", str(cuts), "--run-dir", str(run),
            "--max-steps", str(RANDOM_STEPS), "--ckpt-every", "3", *RANDOM_DATA[method], *extra]  # fmt: skip


@pytest.mark.parametrize("method", sorted(RANDOM_DATA))
def test_random_data_pipeline_resumes_bit_identical(method, longer_cuts, tmp_path):
    """Kill at step 3 + a bit (mid-epoch: 5 batches per epoch), resume, same weights."""
    whole, run = tmp_path / "whole", tmp_path / "run"
    subprocess.run(_random_cmd(method, longer_cuts, whole), check=True, env=_env(), timeout=120)
    _kill_mid_run(_random_cmd(method, longer_cuts, run, "--sleep", "0.05"), run, ("step-000003",))
    resume = _random_cmd(method, longer_cuts, run, "--resume")
    subprocess.run(resume, check=True, env=_env(), timeout=120)
    _assert_same_run(whole, run, RANDOM_STEPS)


def _trainer(cuts_file: Path, run: Path, hidden: int = 16) -> Trainer:
    from lhotse import CutSet

    cfg = TrainConfig(max_steps=STEPS, num_workers=0, resume=True, log_every=1, ckpt_every=4)
    return Trainer(
        ToyModel(hidden),
        ToyObjective(),
        CutSet.from_file(cuts_file).to_eager(),
        CutDataset(),
        cfg,
        run,
        model_spec={"kind": "toy", "config": {"hidden": hidden}},
    )


def test_other_model_config_is_refused(cuts_file, uninterrupted, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(uninterrupted, run)
    with pytest.raises(UserError, match=r"written for model toy with config .*\"hidden\": 16.*"
                       r"this run builds toy with config .*\"hidden\": 32"):  # fmt: skip
        _trainer(cuts_file, run, hidden=32).fit()


def test_kill_during_save_leaves_latest_loadable(cuts_file, uninterrupted, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(uninterrupted, run)
    ckpts = run / "checkpoints"
    # What a kill in the middle of saving step 28 leaves behind: a half-written temp folder.
    tmp = ckpts / ".tmp-step-000028-999"
    tmp.mkdir()
    (tmp / "model.safetensors").write_bytes(b"\x00garbage")
    # ... and a damaged folder that `latest` never pointed to.
    (ckpts / "step-000028").mkdir()
    (ckpts / "step-000028" / "model.json").write_text("{")
    assert find_latest(ckpts).name == f"step-{STEPS:06d}"
    model = ToyModel()
    state = load_checkpoint(find_latest(ckpts), model, {"kind": "toy", "config": {"hidden": 16}})
    assert state["step"] == STEPS
    a = load_file(uninterrupted / "final-rank0.safetensors")
    assert all(torch.equal(a[k], v) for k, v in model.state_dict().items())
    # Resuming (nothing left to do) works, and a later save sweeps the temp folder away.
    trainer = _trainer(cuts_file, run)
    trainer.fit()
    assert trainer.step == STEPS
    trainer.save()
    assert not tmp.exists()


def test_trainer_state_has_no_pickled_objects(uninterrupted):
    """trainer.pt must load with weights_only=True (numpy RNG state as tensors/lists)."""
    ckpt = find_latest(uninterrupted / "checkpoints")
    state = torch.load(ckpt / "trainer.pt", weights_only=True)
    assert {"optimizer", "objective", "ranks", "step"} <= state.keys()
    rng = state["ranks"][0]["rng"]
    assert rng["numpy"][0] == "MT19937" and rng["numpy"][1].dtype == torch.int64
