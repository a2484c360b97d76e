"""Embeddings of stimuli: caption sentence embeddings (transformers), image/text models, and the cache.

Importing this package is cheap: models and torch load only when an encoder is created.
"""

from .cache import CACHE_ENV, EmbeddingCache, cache_dir, text_key
from .text import (
    DEFAULT_MODEL_NAME,
    SentenceEncoder,
    default_model_path,
    embed_captions,
    have_default_model,
    iter_embed_captions,
    shared_encoder,
)

__all__ = [
    "CACHE_ENV",
    "DEFAULT_MODEL_NAME",
    "EmbeddingCache",
    "SentenceEncoder",
    "cache_dir",
    "default_model_path",
    "embed_captions",
    "have_default_model",
    "iter_embed_captions",
    "shared_encoder",
    "text_key",
]
