"""The NDT's section of a run config (``model:``): the architecture's hyperparameters and defaults.

These dataclass defaults are the one source of each default: docs/architecture.md shows them (a test
compares), and ``nlbpipe/templates/base.yaml`` states only the values the NLB runs use instead.
A second model family brings its own section beside this one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ModelConfig:
    num_layers: int = 4
    num_heads: int = 2
    hidden_size: int = 128
    activation: str = "relu"
    dropout: float = 0.2
    dropout_rates: float = 0.2
    dropout_embedding: float = 0.2
    embedding: str = "identity"
    embed_dim: int = 2
    max_spike_count: int = 20
    position: str = "learned"
    pre_norm: bool = True
    fixup_init: bool = True
    # nlbpipe: learned positions N(0, 0.02), Xavier zero-bias feed-forward and out-projection, values
    # shrunk with T-Fixup; ndt2021: what the 2021 NDT ran (positions N(0, 1), torch's default Linear
    # init, no value scaling, a count embedding U(+-0.1)). See README's "NDT" section for the measurement.
    init: str = "nlbpipe"
    # mean_rate: the read-out bias starts at each neuron's log mean count over the training trials,
    # so the first passes go to structure, not to learning the mean (zero: every rate starts at 1)
    readout_bias: str = "mean_rate"
    # factors before the rate read-out: every neuron's log rate is a linear map of this many latent
    # factors per bin (as LFADS reads rates from its factors), not of the full model width; the
    # read-out's dropout falls on the factors. 0 = NDT's read-out, straight from the width.
    factor_dim: int = 0
    # held-in counts smoothed over the trial bins with a Gaussian of this s.d. (ms) before the
    # embedding: the model reads a bin's spikes together with its neighbours', which at a few spikes
    # per second are mostly zeros bin by bin (README, "The demo"). 0 = raw counts, as NDT.
    input_smooth_ms: float = 0.0
    scale_norm: bool = False
    log_rate: bool = True
    context_forward: int = -1
    context_backward: int = -1
