"""Stage 3, task embeddings: TextEmb (``textemb``) and TaskEmb (``taskemb``) of Vu et al. 2020, saving and
loading them (``store``), and cosine similarity between them (``similarity``)."""
