"""A generator whose tokenizer lacks the training EOS stops at its own EOS and says which."""

import logging

import pytest

from axolotl_ipo.errors import UserError
from axolotl_ipo.pairs.from_config import generator_stop_tokens

TRAINING_EOS = "<|im_end|>"


def save_tokenizer(path, vocab: list[str], eos: str | None):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(WordLevel({token: i for i, token in enumerate(vocab)}, unk_token="<unk>"))
    backend.pre_tokenizer = Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token=eos) \
        .save_pretrained(path)
    return str(path)


def test_self_play_stops_at_the_training_eos():
    cfg = {"base_model": "/models/base"}
    assert generator_stop_tokens(TRAINING_EOS, "/models/base", cfg) == (TRAINING_EOS,)


def test_a_generator_with_the_token_stops_at_it(tmp_path):
    path = save_tokenizer(tmp_path, ["<unk>", "hi", TRAINING_EOS, "</s>"], "</s>")
    assert generator_stop_tokens(TRAINING_EOS, path, {"base_model": "b"}) == (TRAINING_EOS,)


def test_a_generator_without_it_uses_its_own_eos_and_says_which(tmp_path, caplog):
    path = save_tokenizer(tmp_path, ["<unk>", "hi", "</s>"], "</s>")
    with caplog.at_level(logging.WARNING, logger="axolotl_ipo"):
        assert generator_stop_tokens(TRAINING_EOS, path, {"base_model": "b"}) == ()
    assert f"has no token '{TRAINING_EOS}'" in caplog.text
    assert "stop at its own EOS '</s>'" in caplog.text


def test_a_generator_with_no_eos_at_all_is_a_user_error(tmp_path):
    path = save_tokenizer(tmp_path, ["<unk>", "hi"], None)
    with pytest.raises(UserError, match=f"rejection_sampling.model {path}: its tokenizer has"):
        generator_stop_tokens(TRAINING_EOS, path, {"base_model": "b"})
