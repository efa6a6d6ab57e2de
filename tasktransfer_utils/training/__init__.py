"""Stage 2, fine-tuning: the authors' per-class presets (``settings``), tokenisation per class (``features``),
heads per class and loading a source's encoder (``models``), task metrics (``metrics``), QA answer extraction
(``qa_postprocess``), and fine-tuning runs with resumable run directories and baselines (``fine_tuning``)."""
