"""The Neural Data Transformer, as one model family behind a small interface:

- ``config.ModelConfig``: its section of the run config (``model:``);
- ``train.train(config, run_dir)``: a training run that writes the checkpoint folders and, when it
  ends, each one's rates (``rates_val.h5``/``rates_test.h5``), resuming from ``run_dir/last``;
- ``inference.load_checkpoint`` / ``predict_rates``: a checkpoint folder back to a model and rates.

Inside: ``model`` (the architecture, top to bottom), ``kernels`` (attention and dropout kernels
behind :func:`kernels.attention`), ``masking`` (masked-modelling masks and the loss),
``checkpoints`` (run and checkpoint folders: save, load, resume). Nothing is imported here, so the
run config can import ``ndt.config`` without loading torch.
"""
