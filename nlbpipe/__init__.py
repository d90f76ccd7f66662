"""nlbpipe: from a Neural Latents Benchmark dataset on DANDI to a scored, validated EvalAI submission."""

__version__ = "0.1.0"
