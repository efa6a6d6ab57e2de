"""Stage 1, the tasks and their data: the 33 tasks of the paper and the offline extras (``tasks``), reading
them from local raw files (``loaders``) or the hub (``hub_loaders``) into one schema per task class through one
raw-example record (``raw_examples``), the FULL / LIMITED data regimes and the three transfer regimes
(``regimes``), and what the commands need from this stage (``commands``)."""
