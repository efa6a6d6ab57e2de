"""tasktransfer_utils: the package behind the tasktransfer notebooks.

Companion to Vu et al., "Exploring and Predicting Transferability across NLP Tasks" (EMNLP 2020).
One module per concept:

- ``tasks``            the paper's 33 tasks and the offline extras (TaskSpec, registry, suites)
- ``loaders``          local raw-format readers and hub readers -> one schema per task class
- ``regimes``          FULL / LIMITED data regimes and the three transfer regimes
- ``settings``         the authors' per-class fine-tuning presets
- ``features``         tokenisation per class (CR pairs, QA doc-stride windows, SL first word piece)
- ``metrics``          task metrics (accuracy, F1, Matthews, Pearson/Spearman, SQuAD v2 EM/F1, seqeval)
- ``qa_postprocess``   offsets-based answer extraction over doc-stride windows
- ``models``           heads per class and intermediate-task transfer of encoder weights
- ``training``         fine-tuning runs (HF Trainer) with resumable run directories
- ``textemb`` / ``taskemb``  the paper's task embeddings; ``embedding_store`` saves/loads them
- ``similarity``       cosine similarity between task embeddings
- ``selection``        source rankers (embeddings, DataSize, CurveGrad, Random, LogME, fusion)
- ``selection_metrics`` rho, NDCG, regret@k, Spearman/Kendall over transfer-result tables
- ``study`` / ``runner`` / ``engines``  transfer studies: config, job graph, resumable execution
- ``plots``            paper-style figures
- ``cli``              the ``tasktransfer`` command
"""

import os as _os

# cuBLAS is deterministic only with a fixed workspace, read when it first starts in a process: set it before
# anything touches CUDA, so that fine-tuning on a GPU (training.deterministic_cuda) reproduces a run exactly.
_os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

__version__ = "0.1.0"
