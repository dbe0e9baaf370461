"""Waveforms in, tensors out: loading/resampling, log-mel and MFCC, the one crop function,
augmentation. The bottom layer: imports nothing else of speechssl but errors/config."""
