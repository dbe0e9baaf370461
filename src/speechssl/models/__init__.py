"""Encoders (frame-level Transformer, ECAPA-TDNN, ResNet) and what wraps them for training:
the pretraining model and EMA teacher, utterance encoders by config, the fine-tuning
classifier, SyncBatchNorm; the upstream interface, HF adapter and registry for everything that
reads hidden states."""
