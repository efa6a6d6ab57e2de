"""LogME against a brute-force Gaussian evidence in float64 and its known behaviour on synthetic data."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import optimize, stats

from tasktransfer_utils.selection import logme


def brute_force_evidence(f: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    """log N(y; 0, α⁻¹ F Fᵀ + β⁻¹ I): the marginal likelihood computed directly (n × n covariance)."""
    cov = f @ f.T / alpha + np.eye(f.shape[0]) / beta
    return float(stats.multivariate_normal(mean=np.zeros(f.shape[0]), cov=cov).logpdf(y))


@pytest.mark.parametrize("n,d", [(40, 6), (12, 30)])  # more examples than features, and fewer
def test_evidence_formula_matches_brute_force(n, d):
    rng = np.random.default_rng(n + d)
    f = rng.normal(size=(n, d))
    y = f @ rng.normal(size=d) * 0.3 + rng.normal(size=n)
    for alpha, beta in [(1.0, 1.0), (0.05, 3.0), (20.0, 0.2)]:
        assert logme.log_evidence(f, y, alpha, beta) == pytest.approx(brute_force_evidence(f, y, alpha, beta),
                                                                       rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("n,d", [(60, 5), (25, 40)])
def test_fixed_point_maximises_the_evidence(n, d):
    rng = np.random.default_rng(3)
    f = rng.normal(size=(n, d))
    y = f[:, 0] * 0.8 - f[:, 1] * 0.5 + 0.5 * rng.normal(size=n)
    fit = logme.logme_fits(f, y, regression=True)[0]
    assert fit.converged
    # MacKay's fixed-point conditions hold at the solution
    svd = logme._SVD(f)
    z = svd.u.T @ y
    mm, res, gamma, _ = logme._evidence_terms(svd, z, float(y @ y), fit.alpha, fit.beta)
    assert fit.alpha == pytest.approx(gamma / mm, rel=1e-8)
    assert fit.beta == pytest.approx((n - gamma) / res, rel=1e-8)
    # and no (α, β) found by a generic optimiser on the brute-force evidence does better
    best = optimize.minimize(lambda p: -brute_force_evidence(f, y, np.exp(p[0]), np.exp(p[1])),
                             x0=[0.0, 0.0], method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 4000})
    assert fit.evidence * n == pytest.approx(-best.fun, abs=1e-6)
    assert fit.evidence * n >= -best.fun - 1e-7
    assert brute_force_evidence(f, y, fit.alpha, fit.beta) == pytest.approx(fit.evidence * n, rel=1e-9)


def test_recovers_noise_precision_and_prior_scale():
    rng = np.random.default_rng(0)
    n, d, sigma = 4000, 4, 0.5
    f = rng.normal(size=(n, d))
    w = rng.normal(size=d)
    y = f @ w + sigma * rng.normal(size=n)
    fit = logme.logme_fits(f, y, regression=True)[0]
    assert fit.beta == pytest.approx(1 / sigma**2, rel=0.08)  # noise precision
    assert fit.gamma == pytest.approx(d, abs=0.05)  # all d directions well determined


def test_prefers_informative_features_for_classification():
    rng = np.random.default_rng(1)
    n = 600
    labels = rng.integers(0, 3, size=n)
    centers = rng.normal(size=(3, 8)) * 2.0
    informative = centers[labels] + rng.normal(size=(n, 8))
    noise = rng.normal(size=(n, 8))
    weak = np.hstack([centers[labels] * 0.2 + rng.normal(size=(n, 8)), rng.normal(size=(n, 8))])
    s_inf = logme.logme_score(informative, labels)
    s_weak = logme.logme_score(weak, labels)
    s_noise = logme.logme_score(noise, labels)
    assert s_inf > s_weak > s_noise
    # per-column mean, as defined
    fits = logme.logme_fits(informative, labels)
    assert len(fits) == 3
    assert s_inf == pytest.approx(np.mean([fi.evidence for fi in fits]))


def test_label_matrix():
    y = logme.label_matrix(np.array([0, 2, 2, 0]))
    assert y.tolist() == [[1, 0], [0, 1], [0, 1], [1, 0]]  # class 1 absent: no column
    assert logme.label_matrix(np.array([0.5, 1.5]), regression=True).shape == (2, 1)
    with pytest.raises(ValueError, match="integer"):
        logme.label_matrix(np.array([0.5, 1.0]))
    with pytest.raises(ValueError, match=">= 0"):
        logme.label_matrix(np.array([0, -100]))
    with pytest.raises(ValueError, match="2-D"):
        logme.logme_score(np.zeros(5), np.zeros(5, dtype=int))
    with pytest.raises(ValueError, match="rows"):
        logme.logme_score(np.ones((4, 2)), np.zeros(5, dtype=int))


def test_logme_ranker_orders_and_caches():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, size=300)
    feats = {
        "good": np.where(labels[:, None] == 1, 1.5, -1.5) + rng.normal(size=(300, 6)),
        "bad": rng.normal(size=(300, 6)),
    }
    calls = []

    def feature_fn(source, target):
        calls.append((source, target))
        return feats[source], labels, False

    ranker = logme.LogMERanker(feature_fn)
    ranked = ranker.rank("T", ["bad", "good"])
    assert ranked["source"].tolist() == ["good", "bad"]
    assert ranked["method"].iloc[0] == "LogME"
    ranker.rank("T", ["bad", "good"])
    assert sorted(calls) == [("bad", "T"), ("good", "T")]


@pytest.mark.parametrize("task", ["RTE", "STS-B", "POS-PTB", "SQuAD-2"])
def test_encoder_features_on_real_data(task, data_dir, tiny_encoder_dir):
    from tasktransfer_utils.data.loaders import load_task

    data = load_task(task, data_dir=data_dir)
    x, y, regression = logme.encoder_features(tiny_encoder_dir, data, max_examples=12, seed=0, device="cpu")
    assert x.ndim == 2 and x.shape[1] == 32 and x.shape[0] == y.shape[0]
    assert np.all(np.isfinite(x))
    if task == "RTE":
        assert x.shape[0] == 12 and not regression and set(np.unique(y)) <= {0, 1}
    if task == "STS-B":
        assert regression and y.dtype.kind == "f" and x.shape[0] == 12
    if task == "POS-PTB":
        from tasktransfer_utils.embeddings.textemb import training_rows

        rows, _ = training_rows(data, "train", "FULL", 0, 12)
        n_words = sum(len(t) for t in rows["tokens"])
        assert not regression and 12 <= x.shape[0] <= n_words and y.max() < len(data.label_names)
        if max(len(t) for t in rows["tokens"]) < 40:  # nothing truncated at 128 word pieces
            assert x.shape[0] == n_words
    if task == "SQuAD-2":
        assert set(np.unique(y)) <= {0, 1, 2} and (y == 1).sum() >= 12  # one start label per window
    score = logme.logme_score(x, y, regression=regression)
    assert np.isfinite(score)


def test_logme_ranker_from_model_dirs(data_dir, tiny_encoder_dir):
    from tasktransfer_utils.data.loaders import load_task

    data = load_task("WNLI", data_dir=data_dir)
    ranker = logme.LogMERanker.from_model_dirs({"A": tiny_encoder_dir, "B": tiny_encoder_dir}, {"WNLI": data},
                                               max_examples=10, device="cpu")
    ranked = ranker.rank("WNLI", ["A", "B"])
    assert ranked["score"].iloc[0] == pytest.approx(ranked["score"].iloc[1])  # same encoder, same features
    with pytest.raises(KeyError, match="no fine-tuned model for source 'C'"):
        ranker.rank("WNLI", ["C"])


@pytest.mark.parametrize("task", ["RTE", "POS-PTB", "SQuAD-2"])
def test_encoder_features_match_one_example_at_a_time(task, data_dir, tiny_encoder_dir):
    """Length-sorted padded batches give the rows of a naive loop: each feature alone (no padding), in data
    order, [CLS] (CR) / first word pieces (SL) / every token labelled start 1, end 2, other 0 (QA)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from tasktransfer_utils.training.features import collator_for_class, tokenize_for_class
    from tasktransfer_utils.data.loaders import load_task
    from tasktransfer_utils.training.settings import preset
    from tasktransfer_utils.embeddings.textemb import training_rows

    data = load_task(task, data_dir=data_dir)
    cls = data.spec.task_class.value
    settings = preset(cls, max_seq_length=64, doc_stride=32, max_query_length=16)
    x, y, _ = logme.encoder_features(tiny_encoder_dir, data, max_examples=10, seed=0, batch_size=4,
                                     settings=settings, device="cpu", max_tokens=10**6)
    rows, _ = training_rows(data, "train", "FULL", 0, 10)
    tok = AutoTokenizer.from_pretrained(tiny_encoder_dir)
    feats = tokenize_for_class(data, rows, tok, settings, for_training=True)
    collate = collator_for_class(cls, tok)
    model = AutoModel.from_pretrained(tiny_encoder_dir).eval()
    xs, ys = [], []
    for i in range(len(feats)):
        f = feats[i]
        b = collate([f])
        with torch.no_grad():
            h = model(**{k: b[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in b})
        h = h.last_hidden_state[0].double().numpy()
        if cls == "CR":
            xs.append(h[:1])
            ys.append([f["labels"]])
        elif cls == "SL":
            keep = [p for p, lab in enumerate(f["labels"]) if lab != -100]
            xs.append(h[keep])
            ys.append([f["labels"][p] for p in keep])
        else:
            lab = [0] * len(f["input_ids"])
            lab[f["end_positions"]] = 2
            lab[f["start_positions"]] = 1
            xs.append(h)
            ys.append(lab)
    ref_x, ref_y = np.concatenate(xs), np.concatenate([np.asarray(v) for v in ys])
    assert x.shape == ref_x.shape and len(feats) > 4  # several batches
    np.testing.assert_allclose(x, ref_x, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(y, ref_y)
