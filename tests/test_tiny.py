"""The tiny model is built offline, deterministically, with a working tokenizer and template."""

from __future__ import annotations

from harness.models import tiny


def test_build_is_deterministic(tiny_model_path, tmp_path):
    again = tiny.build(tmp_path / "again")
    assert tiny.fingerprint(again) == tiny.fingerprint(tiny_model_path)


def test_tokenizer_round_trips_and_has_a_chat_template(tiny_model_path):
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    text = "Using the numbers [83, 78, 1, 39], create an equation that equals 82. \\boxed{204} ∑ é"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert rendered == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    config = AutoConfig.from_pretrained(tiny_model_path)
    assert config.model_type == "qwen2" and config.vocab_size == len(tokenizer)
    assert tokenizer.eos_token == "<|im_end|>" and config.eos_token_id == tokenizer.eos_token_id
