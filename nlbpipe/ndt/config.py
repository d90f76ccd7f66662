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
    scale_norm: bool = False
    log_rate: bool = True
    context_forward: int = -1
    context_backward: int = -1
