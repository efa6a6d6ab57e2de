"""Stage 5, transfer studies (Vu et al. 2020, §2-§5): a config file -> a job graph -> records -> results tables -> report.

A study names tasks (or a suite), transfer regimes, seeds, the encoder, per-class fine-tuning settings
and the task embeddings to compute (YAML; see ``configs/offline_study.yaml``). Its job graph:

- ``finetune``  one per (task, regime side, seed): the task fine-tuned from the pretrained encoder. It is
  both the *source* model reused by every target and the target's *no-transfer baseline*; in
  LIMITED→LIMITED the source's LIMITED fine-tune with seed s IS that task's baseline with seed s.
- ``textemb``   one per fine-tune's (task, regime, seed): TextEmb from the pretrained encoder over the
  same training rows.
- ``taskemb``   one per fine-tune and TaskEmb variant (estimator, labels): the Fisher embedding from
  the fine-tuned model (depends on the fine-tune).
- ``transfer``  one per (source, target, regime, seed), source ≠ target: the target fine-tuned from the
  source's fine-tuned encoder (depends on the source fine-tune).
- ``restart``   (only with ``noise_floor_seeds``) one per LIMITED target and training seed: the target's
  no-transfer fine-tune again on the same 1,000 examples (the sample of the study's first seed) with another
  training seed, for the report's training-noise floor; last in the order.
- ``logme``     (only with a ``logme:`` section) one per transfer pair: LogME (You et al. 2021) of the source's
  fine-tuned encoder's features on the target's training rows, a source-selection baseline that needs no
  target training (depends on the source fine-tune).

Order (the runner takes the first ready job): every fine-tune (cheapest class first: CR, SL, QA), then
the embeddings, then per target (class by class, cheapest first; in config order within a class) its
LogME scores and its transfers, so partial results give complete targets (``study run --target T`` runs
just what target T needs, e.g. to finish a cheap target first). Records (committed) go to ``<results_dir>/records``, embeddings to
``<results_dir>/embeddings``; model weights and scratch state to ``<runs_dir>`` (not committed).
Paths in records are relative to ``runs_dir``; the encoder is named by its id.

Modules, each importing only the ones above it (and earlier stages):

- ``runner``         resumable execution of any job graph (records, locks, retries, progress/ETA)
- ``engines``        where the jobs run: local worker processes, SLURM or submitit (local)
- ``config``         the config schema and :class:`StudyConfig`
- ``jobs``           the job graph: ids, params, dependencies, order
- ``job_functions``  what each job computes
- ``tables``         the results tables written after every job
- ``plan``           the study as a runner plan (and the reference worker processes rebuild it from)
- ``source_models``  the fine-tuned source models on disk; rebuilding them on a fresh clone
- ``cost``           the GPU-hours estimate of ``study run --dry-run``
- ``claims``         the report's claims, each checked against the measured numbers
- ``report``         the source-selection evaluation, markdown summary and figures
- ``commands``       the ``tasktransfer study`` command bodies
"""
