"""A GGUF file turned into an ordinary Hugging Face folder that transformers and vLLM both load.

    python -m harness.models.gguf FILE.gguf OUTDIR [--eos-token TOKEN]

transformers dequantizes GGUF files on load (it needs the ``gguf`` package), but ``save_pretrained``
refuses the loaded model because of its GGUF quantization config; so a fresh model is built from
the config without it, given the dequantized weights, and saved (fp32 safetensors) with the
tokenizer, its chat template and a generation config.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from harness.errors import ModelError


def convert(gguf: str | Path, out: str | Path, eos_token: str | None = None, name: str | None = None) -> Path:
    """Dequantize ``gguf`` into the folder ``out``; ``eos_token`` (default: the tokenizer's) ends
    generation; ``name`` is recorded as the model's ``name_or_path``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    gguf, out = Path(gguf), Path(out)
    if not gguf.is_file():
        raise ModelError(f"GGUF file not found: {gguf}")
    if importlib.util.find_spec("gguf") is None:
        raise ModelError(f"converting {gguf.name} needs the gguf package: pip install gguf accelerate")
    threads = torch.get_num_threads()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    for key in ("quantization_config", "_model_name_or_path"):
        if hasattr(config, key):
            delattr(config, key)
    config.name_or_path = name or gguf.stem
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise ModelError(f"converting {gguf.name}: missing weights {missing[:3]}, unexpected {unexpected[:3]}")
    eos = tokenizer.convert_tokens_to_ids(eos_token) if eos_token else tokenizer.eos_token_id
    if eos is None or eos == tokenizer.unk_token_id:
        raise ModelError(f"converting {gguf.name}: no eos token {eos_token!r} in its vocabulary")
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    torch.set_num_threads(threads)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.models.gguf", description=__doc__.splitlines()[0])
    parser.add_argument("gguf", help="the .gguf file")
    parser.add_argument("outdir", help="the Hugging Face folder to write (model.path=OUTDIR then loads it)")
    parser.add_argument("--eos-token", default=None, help="the token that ends generation (default: the tokenizer's eos)")
    args = parser.parse_args(argv)
    try:
        path = convert(args.gguf, args.outdir, args.eos_token)
    except ModelError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}; use it with model.path={path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
