"""Cosine similarity matrices against scikit-learn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics.pairwise import cosine_similarity as sk_cosine

from tasktransfer_utils.embeddings.store import TaskEmbedding
from tasktransfer_utils.embeddings.similarity import cosine_similarity, cosine_similarity_matrix


def emb(task, vector, **meta):
    base = dict(task=task, method="TaskEmb", component="cls_output", estimator="paper", label_source="gold",
                encoder_id="enc")
    return TaskEmbedding(np.asarray(vector), {**base, **meta})


def test_matches_sklearn_including_a_zero_vector():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(5, 7)).astype(np.float32)
    X[3] = 0.0
    names = ["SST-2", "RTE", "CoLA", "ZERO", "MRPC"]
    df = cosine_similarity_matrix([emb(n, x) for n, x in zip(names, X)])
    assert isinstance(df, pd.DataFrame)
    assert list(df.index) == names and list(df.columns) == names
    np.testing.assert_allclose(df.to_numpy(), sk_cosine(X.astype(np.float64)), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.diag(df.to_numpy())[[0, 1, 2, 4]], 1.0)
    assert df.loc["ZERO", "ZERO"] == 0.0
    np.testing.assert_allclose(df.to_numpy(), df.to_numpy().T)


def test_mapping_input_labels_and_scalar():
    a, b = np.array([1.0, 0.0, 1.0]), np.array([-1.0, 2.0, 0.5])
    df = cosine_similarity_matrix({"a": a, "b": b})
    expect = (a @ b) / (np.linalg.norm(a) * np.linalg.norm(b))
    assert df.loc["a", "b"] == pytest.approx(expect)
    assert cosine_similarity(a, b) == pytest.approx(expect)
    assert cosine_similarity(a, np.zeros(3)) == 0.0
    df2 = cosine_similarity_matrix([emb("T", a), emb("T", b, estimator="paper")], labels=["T/1", "T/2"])
    assert list(df2.index) == ["T/1", "T/2"]


def test_errors():
    with pytest.raises(ValueError, match="duplicate task names"):
        cosine_similarity_matrix([emb("T", [1.0, 2.0]), emb("T", [2.0, 1.0])])
    with pytest.raises(ValueError, match="estimator"):
        cosine_similarity_matrix([emb("A", [1.0, 2.0]), emb("B", [2.0, 1.0], estimator="empirical")])
    with pytest.raises(ValueError, match="length"):
        cosine_similarity_matrix([emb("A", [1.0, 2.0]), emb("B", [2.0, 1.0, 3.0])])
    # check=False compares anyway (the caller vouches for comparability)
    df = cosine_similarity_matrix([emb("A", [1.0, 2.0]), emb("B", [2.0, 1.0], estimator="empirical")], check=False)
    assert df.loc["A", "B"] == pytest.approx(0.8)
