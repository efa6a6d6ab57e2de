"""Stage 4, source selection: rankers of candidate source tasks (``rankers``: task embeddings, DataSize,
CurveGrad, Random, fusion), LogME (``logme``), and evaluating a ranking against measured transfers
(``evaluation``: ρ, NDCG, regret@k, leave-one-target-out, noise floors)."""
