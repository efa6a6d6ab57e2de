"""tasktransfer_utils: the package behind the tasktransfer notebooks.

Companion to Vu et al., "Exploring and Predicting Transferability across NLP Tasks" (EMNLP 2020).
The pipeline, one folder per stage; a stage imports only the stages above it (``tests/test_layout.py``):

- ``errors``, ``paths``  foundation: user-input errors and progress lines, where data, results and the encoder live
- ``data/``          the 33 tasks and the offline extras, local and hub loaders -> one schema per class, regimes
- ``training/``      fine-tuning: presets, tokenisation, heads, metrics, QA post-processing, resumable runs
- ``embeddings/``    TextEmb and TaskEmb, the embedding store, cosine similarity
- ``selection/``     source rankers (embeddings, DataSize, CurveGrad, Random, LogME, fusion) and their evaluation
- ``plots``          paper-style figures from the tables of the stages above (the study report draws them)
- ``study/``         transfer studies: config, job graph, job functions, resumable runner and engines, report
- ``practitioner/``  ranking sources for your own data file; source libraries
- ``notebook_runner``, ``demo``, ``cli``  running the notebooks, ``tasktransfer demo``, the ``tasktransfer`` command
"""

import os as _os

# cuBLAS is deterministic only with a fixed workspace, read when it first starts in a process: set it before
# anything touches CUDA, so that fine-tuning on a GPU (training.fine_tuning.deterministic_cuda) reproduces a run
# exactly.
_os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

__version__ = "0.1.0"
