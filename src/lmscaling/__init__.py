"""lmscaling: reproducible language-model scaling-law experiments.

One library module per workflow stage; none of them imports Snakemake, so each is
usable (and tested) on its own:

- :mod:`lmscaling.data`: raw corpora to cleaned, deduplicated, hash-split Parquet shards.
- :mod:`lmscaling.tokenizer`: tokenizer training and token shards.
- :mod:`lmscaling.model`: the GPT decoder and its parameter/FLOP accounting.
- :mod:`lmscaling.train`: the training loop.
- :mod:`lmscaling.evaluate`: held-out loss, perplexity and bits-per-byte.
- :mod:`lmscaling.fit`: power-law fits of loss against N, D and C.
- :mod:`lmscaling.tracking`: MLflow parent/child runs.
"""

__version__ = "0.1.0"
