"""Speaker verification from a frozen upstream: trials, cosine scoring, EER and minDCF.

No training is involved: embeddings are mean-pooled layer features (or an encoder's
``embed()``), centred on the evaluation set's mean, and compared by cosine similarity. The
error rates sort the scores once and sweep every distinct score as a threshold, so they
are exact (ties handled) and O(n log n). The files of ``speechssl embed`` / ``verify``
(embeddings ``.npz``, trial lists) are read and written here too.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from speechssl.data.sorted_batches import run_sorted_batches
from speechssl.errors import UserError

__all__ = [
    "compute_eer",
    "compute_min_dcf",
    "cosine_scores",
    "embed_cuts",
    "error_rates",
    "load_embeddings",
    "make_trials",
    "read_trials",
    "save_embeddings",
    "score_speakers",
    "verification_metrics",
]


def make_trials(
    speakers: Sequence[str], seed: int = 0, max_targets: int | None = None
) -> np.ndarray:
    """Balanced trials ``[n, 3]`` (index a, index b, 1 = same speaker) over utterances.

    Every same-speaker pair is a target trial (or ``max_targets`` of them, drawn with
    ``seed``); as many different-speaker pairs are drawn without replacement. Pairs are
    unordered (``a < b``), never repeated and never an utterance against itself.
    """
    speakers = list(speakers)
    n = len(speakers)
    by_spk: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(speakers):
        by_spk[s].append(i)
    if len(by_spk) < 2:
        raise UserError(f"verification needs at least 2 speakers, got {len(by_spk)}")
    rng = np.random.default_rng(seed)
    targets = [(a, b) for idx in by_spk.values() for k, a in enumerate(idx) for b in idx[k + 1 :]]
    if not targets:
        raise UserError("verification needs a speaker with at least 2 utterances")
    if max_targets is not None and len(targets) > max_targets:
        keep = rng.choice(len(targets), size=max_targets, replace=False)
        targets = [targets[i] for i in sorted(keep)]
    spk = np.asarray(speakers, dtype=object)
    n_nontarget_pairs = n * (n - 1) // 2 - sum(len(v) * (len(v) - 1) // 2 for v in by_spk.values())
    want = min(len(targets), n_nontarget_pairs)
    chosen: set[tuple[int, int]] = set()
    # Rejection sampling of unordered pairs; fine while non-targets are most of all pairs.
    while len(chosen) < want:
        a = rng.integers(0, n, size=2 * (want - len(chosen)) + 8)
        b = rng.integers(0, n, size=a.size)
        for x, y in zip(a.tolist(), b.tolist(), strict=True):
            if spk[x] == spk[y]:
                continue
            pair = (min(x, y), max(x, y))
            if pair not in chosen:
                chosen.add(pair)
                if len(chosen) == want:
                    break
    nontargets = sorted(chosen)
    trials = [(a, b, 1) for a, b in targets] + [(a, b, 0) for a, b in nontargets]
    return np.asarray(trials, dtype=np.int64).reshape(-1, 3)


def cosine_scores(embeddings: np.ndarray, trials: np.ndarray, center: bool = True) -> np.ndarray:
    """Cosine similarity of each trial's two embeddings (``center``: subtract the mean first).

    Centring on the evaluation set's own mean uses no labels and removes the large shared
    offset of raw features (log-mel energies are all negative), without which every cosine
    is close to 1.
    """
    e = np.asarray(embeddings, dtype=np.float64)
    if center:
        e = e - e.mean(axis=0, keepdims=True)
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    return np.einsum("nd,nd->n", e[trials[:, 0]], e[trials[:, 1]])


def error_rates(
    scores: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False-reject and false-accept rates at every distinct threshold (accept if score >= t).

    Returns ``(thresholds, frr, far)`` with the thresholds ascending: the distinct scores,
    then ``+inf`` (reject everything), so the sweep starts at (FRR 0, FAR 1) and ends at
    (FRR 1, FAR 0).
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    n_t, n_n = int(labels.sum()), int((~labels).sum())
    if n_t == 0 or n_n == 0:
        raise ValueError("need both target and non-target trials")
    uniq, inv = np.unique(scores, return_inverse=True)
    t_per = np.bincount(inv, weights=labels, minlength=uniq.size)
    n_per = np.bincount(inv, weights=~labels, minlength=uniq.size)
    # Rejected at threshold uniq[j]: every score below it.
    t_below = np.concatenate([[0.0], np.cumsum(t_per)])
    n_below = np.concatenate([[0.0], np.cumsum(n_per)])
    frr = t_below / n_t
    far = 1.0 - n_below / n_n
    return np.append(uniq, np.inf), frr, far


def compute_eer(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Equal error rate and its threshold, interpolating between the two sweep points.

    FRR rises and FAR falls with the threshold; the EER is where the segment joining the last
    point with FRR < FAR and the first with FRR >= FAR crosses the diagonal.
    """
    thr, frr, far = error_rates(scores, labels)
    d = frr - far
    k = int(np.argmax(d >= 0))  # d[-1] == 1, so one exists; d[0] == -1, so k >= 1
    if d[k] == 0:
        return float(frr[k]), float(thr[k])
    a = -d[k - 1] / (d[k] - d[k - 1])
    eer = far[k - 1] + a * (far[k] - far[k - 1])
    t_hi = thr[k] if np.isfinite(thr[k]) else thr[k - 1]
    return float(eer), float(thr[k - 1] + a * (t_hi - thr[k - 1]))


def compute_min_dcf(
    scores: np.ndarray,
    labels: np.ndarray,
    p_target: float = 0.01,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
) -> tuple[float, float]:
    """Normalised minimum detection cost and its threshold (NIST SRE / Kaldi's compute_min_dcf).

    ``DCF(t) = c_miss * FRR(t) * p_target + c_fa * FAR(t) * (1 - p_target)``, divided by the
    cost of the best trivial system ``min(c_miss * p_target, c_fa * (1 - p_target))``, so
    1.0 means no better than always rejecting (or always accepting).
    """
    thr, frr, far = error_rates(scores, labels)
    dcf = c_miss * frr * p_target + c_fa * far * (1 - p_target)
    k = int(np.argmin(dcf))
    return float(dcf[k] / min(c_miss * p_target, c_fa * (1 - p_target))), float(thr[k])


def verification_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """EER and minDCF at p_target 0.01 and 0.05, as fractions (not percent)."""
    eer, _ = compute_eer(scores, labels)
    return {
        "eer": eer,
        "min_dcf_0.01": compute_min_dcf(scores, labels, 0.01)[0],
        "min_dcf_0.05": compute_min_dcf(scores, labels, 0.05)[0],
        "trials": int(len(labels)),
        "target_trials": int(np.sum(labels)),
    }


def score_speakers(embeddings: np.ndarray, speakers: Sequence[str], seed: int = 0) -> dict:
    """Balanced trials among ``speakers`` (see :func:`make_trials`), cosine-scored on
    ``embeddings`` (one row per utterance): EER, minDCF and the number of trials."""
    trials = make_trials(speakers, seed=seed)
    out = verification_metrics(cosine_scores(embeddings, trials), trials[:, 2])
    out["trials"] = len(trials)
    return out


def embed_cuts(model, cuts, batch_size: int = 16, device: str = "cpu") -> np.ndarray:
    """``model.embed(wave, lengths)`` for every cut, in order, batched by sorted duration.

    For speaker encoders (ECAPA-TDNN, ResNet) whose trained embedding is the thing to
    evaluate, rather than a mean over a layer's frames. Batches are shortest first and
    bounded in count only.
    """
    cuts = list(cuts)
    out: list[np.ndarray | None] = [None] * len(cuts)
    model = model.to(device).eval()

    def embed(audio, lengths) -> np.ndarray:
        return model.embed(audio, lengths).float().cpu().numpy()

    for idx, emb in run_sorted_batches(embed, cuts, batch_size, device=device, longest_first=False):
        for row, i in enumerate(idx):
            out[i] = emb[row]
    return np.stack(out)


def save_embeddings(path: str | Path, embeddings: np.ndarray, cut_ids: Sequence[str]) -> Path:
    """Write ``embeddings`` ``[N, D]`` (float32) and their cut ids to ``path`` (``.npz``)."""
    path = Path(path)
    path = path if path.suffix == ".npz" else path.with_suffix(".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, embeddings=np.asarray(embeddings, np.float32), cut_ids=np.array(list(cut_ids)))
    return path


def load_embeddings(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """``(embeddings [N, D], cut ids)`` of a file from :func:`save_embeddings` (``speechssl
    embed``); a missing or foreign file is a :class:`UserError`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found: run `speechssl embed` first")
    what = "an embeddings file from `speechssl embed` (arrays 'embeddings' and 'cut_ids')"
    with path.open("rb") as f:
        if f.read(4) != b"PK\x03\x04":  # every .npz is a zip archive
            raise UserError(f"{path} is not {what}: it is not a .npz (zip) archive")
    try:
        data = np.load(path, allow_pickle=False)
        return data["embeddings"], [str(i) for i in data["cut_ids"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path} is not {what}: {exc}") from None


def read_trials(path: str | Path, index: Mapping[str, int]) -> np.ndarray:
    """A trial list (lines ``cut_id_a cut_id_b 0|1``; blank lines skipped) as ``[n, 3]``
    rows of (index a, index b, target) through ``index`` (cut id -> embedding row).

    A malformed line or an id without an embedding is a :class:`UserError` naming the line.
    """
    path = Path(path)
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3 or parts[2] not in ("0", "1"):
            raise UserError(f"{path}:{n}: expected 'id_a id_b 0|1', got {line!r}")
        missing = [p for p in parts[:2] if p not in index]
        if missing:
            raise UserError(f"{path}:{n}: no embedding for {missing[0]!r}")
        rows.append([index[parts[0]], index[parts[1]], int(parts[2])])
    return np.array(rows, dtype=np.int64).reshape(-1, 3)
