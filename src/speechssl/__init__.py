"""speechssl: self-supervised speech representation learning, from pretext choice to transfer.

Five published methods, used as one loop (``docs/methods.md`` says what each computes):

A. Pseudo-label selection by conditional independence, no training: HSIC between speech and
   a signal feature inside each downstream class (Zaiem et al., Interspeech 2021,
   arXiv:2104.07388; groups: JSTSP 2022, arXiv:2107.00594). :mod:`speechssl.pseudolabels`,
   :mod:`speechssl.selection`; ``speechssl select``.
B. Label-free indicators of a checkpoint's quality: RankMe, alpha-ReQ and other rank
   measures, k-means cluster quality (Whetten et al., Interspeech 2025, arXiv:2501.05966).
   :mod:`speechssl.indicators`; ``speechssl assess``, ``speechssl correlate``, and live
   during pretraining.
C. MT4SSL: masked prediction of offline k-means targets and an EMA teacher's layers at once
   (Ma et al., Interspeech 2023, arXiv:2211.07321). :mod:`speechssl.kmeans`,
   :mod:`speechssl.objectives.masked_prediction`, :mod:`speechssl.models.pretrain`;
   ``speechssl kmeans``, ``speechssl pretrain``.
D. Utterance-level DINO and staged fine-tuning (Cho et al., IEEE JSTSP 2022,
   arXiv:2208.05445). :mod:`speechssl.objectives.dino`; ``speechssl dino``,
   ``speechssl finetune``, ``speechssl embed``, ``speechssl verify``.
E. UnFuSeD: unsupervised fine-tuning by self-distillation on clustered embeddings (Seth et
   al., ICASSP 2023 workshops, arXiv:2303.05668). :mod:`speechssl.kmeans.whiten`,
   :mod:`speechssl.models.byola_cnn`, :mod:`speechssl.objectives.self_distill`;
   ``speechssl unfused``.

Entry points: the ``speechssl`` command (:mod:`speechssl.cli`; ``speechssl demo`` runs the
loop on an embedded synthetic corpus); from Python, :func:`speechssl.data.manifest.load_cuts`
(lhotse CutSets), :func:`speechssl.models.registry.load_upstream` (any upstream: ``fbank``,
a run folder, a checkpoint, an HF folder), :class:`speechssl.training.Trainer` (the one
training loop, with an :class:`speechssl.objectives.base.Objective`), and one function per
command in :mod:`speechssl.recipes` (e.g. :func:`speechssl.recipes.probe.run_probe`).

Packages are layered, lowest first: ``audio``, ``kmeans`` < ``data`` < ``models``,
``pseudolabels`` < ``objectives``, ``selection`` < ``training`` < ``evaluation`` <
``indicators`` < ``report`` < ``recipes`` < ``cli``; ``errors``, ``config``, ``runs`` and
``progress`` are used by all. Importing this package imports nothing heavy.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("speechssl")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
