"""One module of wiring per command: build data, model, objective and trainer from a config and
run them. Library code lives below; only the pipelines (``demo``, ``pretrain_next``) compose
other recipes."""
