"""The authors' per-class presets (DESIGN §1) and their validation."""

import pytest

from tasktransfer_utils.training.settings import FineTuneSettings, class_name, preset


def test_presets_match_the_authors_settings():
    cr, qa, sl = preset("CR"), preset("QA"), preset("SL")
    assert (cr.learning_rate, cr.num_epochs, cr.batch_size, cr.max_seq_length) == (2e-5, 3, 32, 128)
    assert (qa.learning_rate, qa.num_epochs, qa.batch_size, qa.max_seq_length) == (3e-5, 3, 12, 384)
    assert (qa.doc_stride, qa.max_query_length) == (128, 64)
    assert (sl.learning_rate, sl.num_epochs, sl.batch_size, sl.max_seq_length) == (5e-5, 6, 32, 128)
    for s in (cr, qa, sl):
        assert (s.weight_decay, s.adam_epsilon, s.warmup_ratio, s.max_grad_norm, s.lr_scheduler) == (
            0.0, 1e-8, 0.0, 1.0, "linear")
        assert s.eval_every_epoch and s.group_by_length


def test_preset_accepts_enum_members_and_returns_independent_copies():
    class FakeEnum:
        value = "SL"

    assert preset(FakeEnum()).learning_rate == 5e-5
    a = preset("cr")
    a.num_epochs = 1
    assert preset("CR").num_epochs == 3


def test_overrides_and_round_trip():
    s = preset("QA", num_epochs=1, max_seq_length=128)
    assert (s.num_epochs, s.max_seq_length, s.learning_rate) == (1, 128, 3e-5)
    assert FineTuneSettings.from_dict(s.to_dict()) == s
    assert s.effective_eval_batch_size == 24
    with pytest.raises(TypeError):
        preset("CR", no_such_field=1)
    with pytest.raises(ValueError, match="unknown fields"):
        FineTuneSettings.from_dict({**s.to_dict(), "bogus": 1})


@pytest.mark.parametrize(
    "field,value",
    [("learning_rate", 0.0), ("batch_size", 0), ("max_seq_length", 4), ("warmup_ratio", 1.0),
     ("lr_scheduler", "exotic"), ("max_eval_examples", 0), ("logging_steps", 0)],
)
def test_invalid_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"FineTuneSettings.{field}"):
        preset("CR", **{field: value})


def test_unknown_class():
    with pytest.raises(ValueError, match="task_class must be one of"):
        class_name("XX")
    with pytest.raises(ValueError):
        preset(3)
