"""Brain → embedding decoders (ridge, contrastive), data preparation and retrieval metrics."""

from .contrastive import ContrastiveDecoder, info_nce
from .metrics import (
    Score,
    decoding_scores,
    mindeye_retrieval,
    pairwise_accuracy,
    pearson_per_dimension,
    topk_retrieval,
)
from .prepare import PreparedData, noise_ceiling, prepare_arrays, prepare_subject, zscore_by_session
from .ridge import RidgeDecoder

__all__ = ["ContrastiveDecoder", "PreparedData", "RidgeDecoder", "Score", "decoding_scores", "info_nce",
           "mindeye_retrieval", "noise_ceiling", "pairwise_accuracy", "pearson_per_dimension",
           "prepare_arrays", "prepare_subject", "topk_retrieval", "zscore_by_session"]
