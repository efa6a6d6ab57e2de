"""TaskEmb (diagonal Fisher) against naive float64 references with explicit per-batch / per-example loops.

The references use transformers' own losses and retain_grad on hooked activations (the authors'
approach), independent of the probe tensors and loss code in ``taskemb``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import (
    BertConfig,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
)

from tasktransfer_utils.embeddings import taskemb
from tasktransfer_utils.embeddings.store import TaskEmbedding
from tasktransfer_utils.embeddings.taskemb import (CLS_COMPONENT, component_names, fisher_from_batches,
                                                   layer_output_component, mark_noise_components, multihead_component,
                                                   noise_only_components, parse_component)

@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """The models here are tiny: one intra-op thread is faster, and much faster on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


VOCAB = 40
NUM_LAYERS = 2
CASES = {  # case -> (task class, model class, num_labels, kind)
    "cr_class": ("CR", BertForSequenceClassification, 3, "class"),
    "cr_reg": ("CR", BertForSequenceClassification, 1, "regression"),
    "qa": ("QA", BertForQuestionAnswering, 2, "span"),
    "sl": ("SL", BertForTokenClassification, 4, "token"),
}
LENGTHS = [[5, 3, 7], [4, 6, 2]]  # real tokens per example, per batch (padded to the max)


def make_model(case: str, dropout: float = 0.1):
    _, cls, num_labels, kind = CASES[case]
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=NUM_LAYERS, num_attention_heads=2,
        intermediate_size=24, max_position_embeddings=32, type_vocab_size=2, num_labels=num_labels,
        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
    )
    if kind == "regression":
        cfg.problem_type = "regression"
    model = cls(cfg).double()
    with torch.no_grad():  # break the symmetry of freshly initialised LayerNorms / zero biases
        for n, p in model.named_parameters():
            if "LayerNorm" in n or n.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


def make_batches(case: str, lengths=LENGTHS, seed: int = 0) -> list[dict]:
    """Hand-built padded batches; ids drawn from few values so that tokens repeat inside an example."""
    _, _, num_labels, kind = CASES[case]
    g = torch.Generator().manual_seed(seed)
    batches = []
    for lens in lengths:
        B, T = len(lens), max(lens)
        ids = torch.zeros(B, T, dtype=torch.long)
        mask = torch.zeros(B, T, dtype=torch.long)
        tt = torch.zeros(B, T, dtype=torch.long)
        for i, L in enumerate(lens):
            ids[i, :L] = torch.randint(1, 9, (L,), generator=g)
            ids[i, 0] = 2
            mask[i, :L] = 1
            tt[i, L // 2 : L] = 1
        b = {"input_ids": ids, "attention_mask": mask, "token_type_ids": tt}
        if kind == "class":
            b["labels"] = torch.randint(0, num_labels, (B,), generator=g)
        elif kind == "regression":
            b["labels"] = 5 * torch.rand(B, generator=g, dtype=torch.float64)
        elif kind == "span":
            st = torch.tensor([int(torch.randint(0, L, (1,), generator=g)) for L in lens])
            b["start_positions"] = st
            b["end_positions"] = torch.tensor([min(L - 1, int(s) + 1) for s, L in zip(st, lens)])
        else:
            lab = torch.full((B, T), -100, dtype=torch.long)
            for i, L in enumerate(lens):
                for t in range(1, L - 1):
                    if t == 1 or torch.rand(1, generator=g) < 0.7:  # -100 on continuation pieces
                        lab[i, t] = int(torch.randint(0, num_labels, (1,), generator=g))
            b["labels"] = lab
        batches.append(b)
    return batches


def single_examples(batches: list[dict], cut: bool = True) -> list[dict]:
    """Every example as its own batch of one, cut to its real length (no padding) or kept as padded."""
    out = []
    for b in batches:
        for i in range(b["input_ids"].shape[0]):
            L = int(b["attention_mask"][i].sum()) if cut else b["attention_mask"].shape[1]
            out.append({k: v[i : i + 1, :L] if v.dim() == 2 else v[i : i + 1] for k, v in b.items()})
    return out


def pad_batches(batches: list[dict], length: int) -> list[dict]:
    """Every batch padded to ``length`` positions (the authors' windows are padded to max_seq_length)."""
    out = []
    for b in batches:
        T = b["input_ids"].shape[1]
        out.append({k: torch.nn.functional.pad(v, (0, length - T)) if v.dim() == 2 else v for k, v in b.items()})
    return out


# ------------------------------------------------------------------------------------- naive reference


def reference_fisher(model, batches, case, loss_fn=None) -> dict[str, np.ndarray]:
    """Paper estimator by the book: per batch one backward of the HF loss, grad² per parameter; activation
    gradients via retain_grad in forward hooks, summed with explicit loops over examples and tokens."""
    task_class, _, _, kind = CASES[case]
    model.eval()
    prefix = model.base_model_prefix
    base = model.base_model
    acc: dict[str, np.ndarray] = {}
    n_examples = 0
    for batch in batches:
        model.zero_grad(set_to_none=True)
        captured = {}
        hooks = []
        for i, layer in enumerate(base.encoder.layer):
            def mh(mod, a, o, i=i):
                o[0].retain_grad()
                captured[multihead_component(i)] = o[0]

            def lo(mod, a, o, i=i):
                o.retain_grad()
                captured[layer_output_component(i)] = o

            hooks += [layer.attention.self.register_forward_hook(mh), layer.output.register_forward_hook(lo)]
        if task_class == "CR":
            def po(mod, a, o):
                o.retain_grad()
                captured[CLS_COMPONENT] = o

            hooks.append(base.pooler.register_forward_hook(po))
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
        targets = {k: v for k, v in batch.items() if k not in inputs}
        out = model(**inputs, **({} if loss_fn else targets))
        loss = loss_fn(out, batch) if loss_fn else out.loss
        loss.backward()
        for h in hooks:
            h.remove()
        mask = batch["attention_mask"]
        B, T = mask.shape
        ntok = float(mask.sum())
        for n, p in model.named_parameters():
            name = n[len(prefix) + 1 :] if n.startswith(prefix + ".") else "head." + n
            g2 = (p.grad.detach() ** 2).numpy() if p.grad is not None else np.zeros(tuple(p.shape))
            acc[name] = acc.get(name, 0) + g2
        for name, act in captured.items():
            if name == CLS_COMPONENT:
                continue
            g = act.grad.detach().numpy()
            s = np.zeros(g.shape[-1])
            for i in range(B):
                for t in range(T):
                    if mask[i, t]:
                        s += g[i, t]
            acc[name] = acc.get(name, 0) + s**2 / ntok
        if task_class == "SL":  # [CLS] carries no label: no cls_output component
            n_examples += B
            continue
        if task_class == "CR":
            g = captured[CLS_COMPONENT].grad.detach().numpy()
        else:
            g = captured[layer_output_component(NUM_LAYERS - 1)].grad.detach().numpy()[:, 0, :]
        s = np.zeros(g.shape[-1])
        for i in range(B):
            s += g[i]
        acc[CLS_COMPONENT] = acc.get(CLS_COMPONENT, 0) + s**2 / ntok
        n_examples += B
    model.zero_grad(set_to_none=True)
    return {k: v / n_examples for k, v in acc.items()}


def assert_components_close(got: dict, want: dict, rtol: float = 1e-5, floor: float = 1e-12) -> None:
    """Max abs error / max |reference| < rtol per component. A component that is zero in exact
    arithmetic (QA: the last layer output and the head bias, as the start/end softmax gradients sum to
    zero over tokens) is compared against ``floor`` x the largest component instead of its own rounding
    noise."""
    assert set(got) == set(want), (set(got) ^ set(want))
    floor = floor * max(float(np.abs(v).max()) for v in want.values())
    for name in want:
        a, b = np.asarray(got[name], dtype=np.float64), np.asarray(want[name], dtype=np.float64)
        assert a.shape == b.shape, name
        scale = max(float(np.abs(b).max()), floor)
        rel = float(np.abs(a - b).max()) / scale
        assert rel < rtol, f"{name}: relative error {rel:.2e} (max |ref| {scale:.3e})"


def qa_masked_loss(out, batch):
    """QA loss with padding excluded from the softmax, written out per example."""
    mask = batch["attention_mask"]
    total = 0.0
    for i in range(mask.shape[0]):
        L = int(mask[i].sum())
        ls = torch.log_softmax(out.start_logits[i, :L], -1)[batch["start_positions"][i]]
        le = torch.log_softmax(out.end_logits[i, :L], -1)[batch["end_positions"][i]]
        total = total - (ls + le) / 2
    return total / mask.shape[0]


def _explicit_log_softmax(x):
    """log softmax of a 1-D tensor written out: x - log Σ exp(x - max) - max."""
    m = x.max().detach()
    return x - m - torch.log(torch.exp(x - m).sum())


def qa_authors_loss(out, batch):
    """The authors' QA loss written out per window: the start/end log-softmax over EVERY position of the
    padded window, padding included."""
    total = 0.0
    B = batch["input_ids"].shape[0]
    for i in range(B):
        ls = _explicit_log_softmax(out.start_logits[i])[batch["start_positions"][i]]
        le = _explicit_log_softmax(out.end_logits[i])[batch["end_positions"][i]]
        total = total - (ls + le) / 2
    return total / B


# ------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("case", list(CASES))
def test_paper_estimator_matches_naive_reference(case):
    model = make_model(case)
    model.train()  # must be switched to eval inside and restored afterwards
    batches = make_batches(case)
    got = fisher_from_batches(model, batches, CASES[case][0], estimator="paper", qa_loss="masked").components
    assert model.training
    loss_fn = qa_masked_loss if case == "qa" else None
    want = reference_fisher(model, batches, case, loss_fn=loss_fn)
    assert_components_close(got, want)
    assert any(np.abs(v).max() > 0 for v in got.values())
    if case == "sl":
        assert CLS_COMPONENT not in got
    else:
        assert np.abs(got[CLS_COMPONENT]).max() > 0


def test_qa_without_padding_equals_transformers_loss():
    model = make_model("qa")
    batches = make_batches("qa", lengths=[[5, 5], [4, 4, 4]])
    want = reference_fisher(model, batches, "qa")
    for qa_loss in ("authors", "masked"):
        got = fisher_from_batches(model, batches, "QA", qa_loss=qa_loss).components
        assert_components_close(got, want)


@pytest.mark.parametrize("qa_loss", ["authors", "masked"])
def test_qa_losses_match_naive_loop_on_windows_padded_to_max_length(qa_loss):
    """Windows padded to a fixed length (the authors' max_seq_length): both QA losses against a float64
    loop with an explicit per-window log-softmax over all positions / over the real ones, to ~1e-10."""
    model = make_model("qa")
    batches = pad_batches(make_batches("qa"), 10)
    got = fisher_from_batches(model, batches, "QA", qa_loss=qa_loss).components
    want = reference_fisher(model, batches, "qa", loss_fn=qa_authors_loss if qa_loss == "authors" else qa_masked_loss)
    assert_components_close(got, want, rtol=1e-10, floor=1e-20)
    if qa_loss == "authors":  # transformers' loss (what the authors' code called) is the same loss
        assert_components_close(got, reference_fisher(model, batches, "qa"), rtol=1e-10, floor=1e-20)


def test_qa_losses_differ_where_windows_have_padding():
    model = make_model("qa")
    batches = pad_batches(make_batches("qa"), 10)
    a = fisher_from_batches(model, batches, "QA", qa_loss="authors").components
    m = fisher_from_batches(model, batches, "QA", qa_loss="masked").components
    c = multihead_component(0)
    assert np.abs(a[c] - m[c]).max() > 1e-3 * np.abs(m[c]).max()
    with pytest.raises(ValueError, match="qa_loss"):
        fisher_from_batches(model, batches, "QA", qa_loss="padded")


@pytest.mark.parametrize("case", list(CASES))
def test_empirical_estimator_matches_single_example_loop(case):
    model = make_model(case)
    batches = make_batches(case)
    got = fisher_from_batches(model, batches, CASES[case][0], estimator="empirical", per_example_chunk=2,
                              qa_loss="masked")
    want = reference_fisher(model, single_examples(batches), case)
    assert_components_close(got.components, want)
    assert got.num_examples == sum(len(l) for l in LENGTHS)
    if case == "qa":  # the authors' loss: each example's loss over every position of its padded window
        got = fisher_from_batches(model, batches, "QA", estimator="empirical", per_example_chunk=2)
        want = reference_fisher(model, single_examples(batches, cut=False), case, loss_fn=qa_authors_loss)
        assert_components_close(got.components, want)


def test_empirical_dense_and_sparse_embedding_paths_agree():
    model = make_model("cr_class")
    batches = make_batches("cr_class")
    sparse = fisher_from_batches(model, batches, "CR", estimator="empirical").components
    dense = fisher_from_batches(model, batches, "CR", estimator="empirical", sparse_embedding_grads=False).components
    assert_components_close(sparse, dense, rtol=1e-10)
    assert np.abs(sparse["embeddings.word_embeddings.weight"]).max() > 0


def test_empirical_differs_from_paper():
    model = make_model("cr_class")
    batches = make_batches("cr_class")
    paper = fisher_from_batches(model, batches, "CR", estimator="paper").components
    emp = fisher_from_batches(model, batches, "CR", estimator="empirical").components
    w = "encoder.layer.0.attention.self.query.weight"
    assert np.abs(paper[w] - emp[w]).max() > 0.1 * np.abs(emp[w]).max()
    # Jensen: (mean of gradients)^2 * B <= mean of squared gradients summed over a batch
    assert paper["head.classifier.weight"].sum() < emp["head.classifier.weight"].sum()


def _sampled_reference_loss(case, gen, k, qa_loss="masked"):
    """The authors' sampled-label objective: mean over draws of the log-likelihood of each draw."""
    def loss_fn(out, batch):
        if case == "cr_class":
            probs = torch.softmax(out.logits.detach().double(), -1)
            idx = torch.multinomial(probs, k, replacement=True, generator=gen)
            return -torch.gather(torch.log_softmax(out.logits, -1), 1, idx).mean()
        if case == "sl":
            valid = batch["labels"] != -100
            logits = out.logits[valid]
            idx = torch.multinomial(torch.softmax(logits.detach().double(), -1), k, replacement=True, generator=gen)
            return -torch.gather(torch.log_softmax(logits, -1), 1, idx).mean()
        if case == "qa":
            mask = batch["attention_mask"].bool()
            if qa_loss == "authors":
                mask = torch.ones_like(mask)
            total = 0.0
            for logits in (out.start_logits, out.end_logits):
                filled = torch.where(mask, logits, torch.tensor(-1e300, dtype=logits.dtype))
                logp = torch.log_softmax(filled, -1)
                idx = torch.multinomial((logp.detach().exp() * mask), k, replacement=True, generator=gen)
                total = total - torch.gather(logp, 1, idx).mean() / 2
            return total
        pred = out.logits[:, 0]
        draws = taskemb._truncated_normal(pred.detach().double(), 0.25, k, 0.0, 5.0, gen)
        return (((draws - pred[:, None]) ** 2) / (2 * 0.25**2)).mean()

    return loss_fn


@pytest.mark.parametrize("case", list(CASES) + ["qa-authors"])
def test_sampled_labels_match_reference_draws(case):
    case, qa_loss = (case.split("-") + ["masked"])[:2]
    model = make_model(case)
    batches = make_batches(case)
    k = 7
    got = fisher_from_batches(model, batches, CASES[case][0], labels="sampled", seed=11, num_label_samples=k,
                              regression_range=(0.0, 5.0), qa_loss=qa_loss).components
    gen = torch.Generator().manual_seed(11)
    want = reference_fisher(model, batches, case, loss_fn=_sampled_reference_loss(case, gen, k, qa_loss))
    assert_components_close(got, want)


@pytest.mark.parametrize("estimator", ["paper", "empirical"])
def test_sampled_labels_reproducible_under_seed(estimator):
    model = make_model("sl")
    batches = make_batches("sl")
    run = lambda seed: fisher_from_batches(model, batches, "SL", estimator=estimator, labels="sampled",
                                           seed=seed, num_label_samples=3).components
    a, b, c = run(5), run(5), run(6)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert any(not np.allclose(a[n], c[n]) for n in a)


def test_sampled_regression_draws_stay_in_range():
    gen = torch.Generator().manual_seed(0)
    mean = torch.tensor([-1.0, 0.1, 2.5, 4.9, 7.0], dtype=torch.float64)
    draws = taskemb._truncated_normal(mean, 0.25, 2000, 0.0, 5.0, gen)
    assert draws.min() >= 0.0 and draws.max() <= 5.0
    # a prediction well inside the range is unaffected by truncation
    assert abs(float(draws[2].mean()) - 2.5) < 0.03 and abs(float(draws[2].std()) - 0.25) < 0.02


def test_component_names_and_selection():
    model = make_model("cr_class")
    names = component_names(model, "CR")
    assert names[0] == "embeddings.word_embeddings.weight"
    assert "encoder.layer.1.attention.self.query.weight" in names
    assert "pooler.dense.weight" in names and "head.classifier.weight" in names
    assert names[-1] == CLS_COMPONENT
    assert multihead_component(0) in names and layer_output_component(1) in names
    assert parse_component("encoder.layer.1.layer_output") == {"kind": "layer_output", "layer": 1}
    assert parse_component("head.qa_outputs.bias")["kind"] == "head"
    qa_names = component_names(make_model("qa"), "QA")
    assert "pooler.dense.weight" not in qa_names and CLS_COMPONENT in qa_names
    assert CLS_COMPONENT not in component_names(make_model("sl"), "SL")

    batches = make_batches("cr_class")
    full = fisher_from_batches(model, batches, "CR").components
    part = fisher_from_batches(model, batches, "CR", components=["encoder.layer.*.layer_output", CLS_COMPONENT]).components
    assert sorted(part) == sorted([layer_output_component(0), layer_output_component(1), CLS_COMPONENT])
    for name in part:
        np.testing.assert_allclose(part[name], full[name], rtol=1e-12)
    with pytest.raises(ValueError, match="match no component"):
        fisher_from_batches(model, batches, "CR", components=["encoder.layer.9.*"])


def test_cls_only_for_qa_model_uses_last_layer():
    model = make_model("qa")
    batches = make_batches("qa")
    full = fisher_from_batches(model, batches, "QA").components
    only = fisher_from_batches(model, batches, "QA", components=[CLS_COMPONENT]).components
    assert list(only) == [CLS_COMPONENT]
    np.testing.assert_allclose(only[CLS_COMPONENT], full[CLS_COMPONENT], rtol=1e-12)
    with pytest.raises(ValueError, match="match no component"):
        fisher_from_batches(make_model("sl"), make_batches("sl"), "SL", components=[CLS_COMPONENT])


def test_float32_model_accumulates_in_place_like_float64():
    model = make_model("sl").float()
    batches = make_batches("sl")
    f32 = fisher_from_batches(model, batches, "SL").components
    f64 = fisher_from_batches(model, batches, "SL", accumulate_dtype=torch.float64).components
    assert f32["encoder.layer.0.output.dense.weight"].dtype == np.float32
    assert f64["encoder.layer.0.output.dense.weight"].dtype == np.float64
    assert_components_close(f32, f64, rtol=1e-5, floor=1e-6)


def test_bad_options_raise():
    model = make_model("cr_class")
    with pytest.raises(ValueError, match="estimator"):
        fisher_from_batches(model, make_batches("cr_class"), "CR", estimator="exact")
    with pytest.raises(ValueError, match="labels"):
        fisher_from_batches(model, make_batches("cr_class"), "CR", labels="predicted")


# ------------------------------------------------------------------------------------- noise-only components


def _expected_noise(cls: str, qa_loss: str) -> set[str]:
    expected = {f"encoder.layer.{i}.attention.self.key.bias" for i in range(NUM_LAYERS)}
    if cls == "QA":
        expected |= {"head.qa_outputs.bias", f"encoder.layer.{NUM_LAYERS - 1}.output.LayerNorm.bias"}
        if qa_loss == "masked":
            expected.add(layer_output_component(NUM_LAYERS - 1))
    return expected


@pytest.mark.parametrize("case,qa_loss", [("cr_class", "authors"), ("cr_reg", "authors"), ("sl", "authors"),
                                          ("qa", "authors"), ("qa", "masked")])
def test_noise_only_components_are_zero_and_flagged_exactly(case, qa_loss):
    """float64: the key-bias gradients, the QA span-head bias and last output LayerNorm bias (and under the
    masked loss the last layer_output) are zero up to ~1e-30 of the largest component; the detector flags
    exactly those, by rule and by magnitude. Under the authors' loss the last layer_output is a real value."""
    cls = CASES[case][0]
    model = make_model(case)
    batches = pad_batches(make_batches(case), 10) if cls == "QA" else make_batches(case)
    comps = fisher_from_batches(model, batches, cls, qa_loss=qa_loss).components
    scale = max(float(np.abs(v).max()) for v in comps.values())
    expected = _expected_noise(cls, qa_loss)
    for name in expected:
        assert float(np.abs(comps[name]).max()) < 1e-25 * scale, name
    median = float(np.median([np.linalg.norm(v) for v in comps.values()]))
    others = min(float(np.linalg.norm(v)) for n, v in comps.items() if n not in expected)
    assert others > 10 * taskemb.NOISE_RELATIVE_THRESHOLD * median  # the smallest real ones: query biases
    if cls == "QA" and qa_loss == "authors":
        assert float(np.linalg.norm(comps[layer_output_component(NUM_LAYERS - 1)])) > 1e-3 * median
    assert set(noise_only_components(comps, cls, NUM_LAYERS, qa_loss)) == expected
    embs = {c: TaskEmbedding(v.reshape(-1), {"task": "T", "task_class": cls, "component": c, "num_layers": NUM_LAYERS,
                                             "qa_loss": qa_loss if cls == "QA" else None})
            for c, v in comps.items()}
    flagged = mark_noise_components(embs)
    assert flagged == {c: ["rule", "magnitude"] for c in expected}
    for c, e in embs.items():
        assert e.meta["noise_only"] == (c in expected) and e.meta["noise_components"] == sorted(expected)
        assert (e.meta["noise_rule"] is not None) == (c in expected)


def test_noise_detector_by_magnitude_alone_and_legacy_qa_loss():
    """A component the rules do not know is flagged by its measured size alone; a QA embedding without a
    ``qa_loss`` field was made with the masked loss (the offline study's)."""
    v = np.array([1.0, 2.0, 3.0])
    metas = lambda c: {"task": "T", "task_class": "CR", "component": c, "num_layers": 2}
    embs = {c: TaskEmbedding(v * s, metas(c)) for c, s in
            [("a", 1.0), ("b", 2.0), ("c", 0.5), ("tiny", 1e-12), ("encoder.layer.0.attention.self.key.bias", 1.0)]}
    assert mark_noise_components(embs) == {"tiny": ["magnitude"], "encoder.layer.0.attention.self.key.bias": ["rule"]}
    assert embs["tiny"].meta["relative_norm"] == pytest.approx(1e-12)
    assert embs["a"].meta["noise_only"] is False and embs["a"].meta["noise_reasons"] == []
    legacy = noise_only_components([layer_output_component(1), layer_output_component(0)], "QA", 2)
    assert list(legacy) == [layer_output_component(1)]
    assert noise_only_components([layer_output_component(1)], "QA", 2, "authors") == {}
    assert noise_only_components([layer_output_component(1)], "SL", 2, None) == {}


# ------------------------------------------------------------------------------------- on fine-tuning runs

RUN_TASKS = {"cr_class": ("RTE", 8), "cr_reg": ("STS-B", 8), "qa": ("SQuAD-2", 3), "sl": ("NER", 8)}


@pytest.fixture(scope="module")
def finetuned_runs(tmp_path_factory, tiny_encoder_dir, data_dir):
    """One tiny fine-tuning run per case (tiny random BERT, a dozen real examples, one epoch)."""
    import dataclasses

    from datasets import DatasetDict

    from tasktransfer_utils.data.loaders import load_task
    from tasktransfer_utils.training.settings import preset
    from tasktransfer_utils.training.fine_tuning import fine_tune

    root = tmp_path_factory.mktemp("taskemb_runs")
    runs = {}
    for case, (name, n) in RUN_TASKS.items():
        td = load_task(name, data_dir)
        td = dataclasses.replace(td, splits=DatasetDict(train=td.splits["train"].select(range(n)),
                                                        validation=td.splits["validation"].select(range(4))))
        cls = CASES[case][0]
        extra = {"doc_stride": 32, "max_query_length": 16} if cls == "QA" else {}
        settings = preset(cls, batch_size=4, num_epochs=1, learning_rate=1e-3, max_seq_length=64, **extra)
        fine_tune(td, root / name, encoder=tiny_encoder_dir, settings=settings, seed=3)
        runs[case] = (td, root / name)
    return runs


@pytest.mark.parametrize("case", list(RUN_TASKS))
def test_compute_taskemb_on_a_finetuning_run(case, finetuned_runs, tiny_encoder_dir):
    from tasktransfer_utils.training.features import tokenize_for_class
    from tasktransfer_utils.training.settings import preset
    from tasktransfer_utils.embeddings.taskemb import compute_taskemb, load_finetuned

    td, run_dir = finetuned_runs[case]
    embs = compute_taskemb(td, run_dir, batch_size=4)
    model, tok, folder, run = load_finetuned(run_dir, CASES[case][0])
    assert list(embs) == component_names(model, CASES[case][0])
    n_features = len(tokenize_for_class(td, td.train, tok, preset(CASES[case][0], max_seq_length=64, doc_stride=32,
                                                                  max_query_length=16), for_training=True))
    for name, e in embs.items():
        m = e.meta
        assert (m["task"], m["method"], m["component"], m["estimator"], m["label_source"]) == (
            td.spec.name, "TaskEmb", name, "paper", "gold")
        assert m["encoder_id"] == tiny_encoder_dir.rstrip("/").split("/")[-1]
        assert m["regime"] == "FULL" and m["data_seed"] == 3 and m["num_examples"] == n_features
        assert e.vector.shape == (int(np.prod(m["shape"])),) and e.vector.dtype == np.float32
        assert np.all(e.vector >= 0)
        assert m["qa_loss"] == ("authors" if case == "qa" else None)
    last = m["num_layers"] - 1
    flagged = {n for n, e in embs.items() if e.meta["noise_only"]}
    expected = {f"encoder.layer.{i}.attention.self.key.bias" for i in range(last + 1)}
    if case == "qa":
        expected |= {"head.qa_outputs.bias", f"encoder.layer.{last}.output.LayerNorm.bias"}
        assert n_features > len(td.train)  # windows, not questions
        masked = compute_taskemb(td, run_dir, batch_size=4, qa_loss="masked",
                                 components=["encoder.layer.*.layer_output"])
        assert masked[layer_output_component(last)].meta["noise_only"]
        assert masked[layer_output_component(last)].meta["qa_loss"] == "masked"
        assert not masked[layer_output_component(0)].meta["noise_only"]
    assert flagged == expected


@pytest.mark.parametrize("case", ["qa", "sl"])
def test_per_example_estimator_ignores_batching_on_real_data(case, finetuned_runs):
    """The per-example estimator equals the paper's with batches of one, whatever the batching and
    padding (QA: padding is outside the softmax; SL: per-example token means)."""
    from tasktransfer_utils.embeddings.taskemb import compute_taskemb

    td, run_dir = finetuned_runs[case]
    comps = ["embeddings.word_embeddings.weight", "encoder.layer.1.*", "head.*"] + (["cls_output"] if case == "qa" else [])
    n = {"qa": 2, "sl": 5}[case]
    ones = compute_taskemb(td, run_dir, batch_size=1, components=comps, max_examples=n)
    emp = compute_taskemb(td, run_dir, estimator="empirical", batch_size=5, components=comps, max_examples=n)
    assert all(e.meta["estimator"] == "empirical" for e in emp.values())
    assert_components_close({k: v.vector for k, v in emp.items()}, {k: v.vector for k, v in ones.items()},
                            rtol=1e-4, floor=1e-6)  # float32 model


def test_compute_taskemb_sampled_regression_and_wrong_task(finetuned_runs):
    from tasktransfer_utils.embeddings.taskemb import compute_taskemb

    td, run_dir = finetuned_runs["cr_reg"]
    a = compute_taskemb(td, run_dir, labels="sampled", num_label_samples=5, seed=1, components=["cls_output"])
    b = compute_taskemb(td, run_dir, labels="sampled", num_label_samples=5, seed=1, components=["cls_output"])
    m = a["cls_output"].meta
    ys = td.train["label"]
    assert m["regression_range"] == [min(ys), max(ys)] and m["regression_std"] == 0.25 and m["num_label_samples"] == 5
    np.testing.assert_array_equal(a["cls_output"].vector, b["cls_output"].vector)
    other_td, _ = finetuned_runs["cr_class"]
    with pytest.raises(ValueError, match="fine-tuned on 'STS-B'"):
        compute_taskemb(other_td, run_dir)
