"""lhotse CutSets in and out: corpus recipes, checks, splits by speaker, label encoders, and the
datasets that turn a sampler's cuts into batches (plain, pretraining, multi-crop, chunks), each
batch's randomness seeded from its position (:class:`~speechssl.data.batching.SeededCuts`)."""
