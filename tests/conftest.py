"""Shared test helpers: audio made in the test, and the real corpora when they are present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
# A two-block transformers HuBERT / wav2vec2 config small enough for a test (hf_export, hub).
HF_TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    conv_dim=[16] * 7,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=16,
    layer_norm_eps=1e-5,
)


def write_audio(path: Path, seconds: float = 0.5, sr: int = 16000, channels: int = 1, freq=220.0):
    """A sine (per channel a different amplitude) written with soundfile; returns the samples."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    x = np.stack([(0.3 + 0.2 * c) * np.sin(2 * np.pi * freq * t) for c in range(channels)], 1)
    sf.write(path, x.astype(np.float32) if channels > 1 else x[:, 0].astype(np.float32), sr)
    return x.astype(np.float32)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture
def one_thread():
    """Small convs can be 100x slower with 2 OpenMP threads on a busy machine; use one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
