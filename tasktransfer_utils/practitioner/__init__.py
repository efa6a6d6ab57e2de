"""Stage 6, for a practitioner's own data: reading a dataset file and ranking stored sources for it
(``rank``), source libraries (``library``: the study's and your own candidate sources), and the
``tasktransfer rank`` command (``commands``)."""
