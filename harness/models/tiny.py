"""Tiny random-weight models built offline: a Qwen2 architecture and a byte-level BPE tokenizer.

    python -m harness.models.tiny OUTDIR [--preset tiny|bench]

Deterministic: the same preset gives byte-identical files. The tokenizer is trained on a corpus
made here (task-like English, numbers and arithmetic), the weights are drawn from a seeded
generator, and the chat template is ChatML. Used by tests, the demo and the CPU benchmark.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from harness.storage import build_cached

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
BUILD_VERSION = 2


@dataclass(frozen=True)
class Preset:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    max_position_embeddings: int
    init_std: float
    head_std: float


PRESETS = {
    # Seconds to build; fast enough for every test.
    "tiny": Preset(512, 128, 256, 2, 2, 1, 4096, 0.02, 0.1),
    # Qwen2-0.5B's width and a vocabulary in the tens of thousands, with fewer layers (CPU benchmark).
    "bench": Preset(32768, 896, 4864, 4, 14, 2, 4096, 0.02, 0.1),
}

_WORDS = (
    "the a an of to and in is it that for on with as by be this are from or at which answer "
    "question number numbers equation equals create using basic arithmetic operations each only "
    "once show your work final tags example reason step please put within boxed find let sum "
    "product value integer positive real how many ways what when there if then so we have thus "
    "therefore total divide multiply add subtract remainder prime digit digits point points line "
    "circle triangle square area length probability code input output print return def class "
    "solution test case list string true false none self int while for range len"
).split()


def _corpus(n_words: int, seed: int) -> list[str]:
    """Task-like text: words, numbers, arithmetic and chat markup, from a seeded generator."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n_words // 12):
        parts = []
        for _ in range(12):
            r = rng.random()
            if r < 0.6:
                parts.append(rng.choice(_WORDS))
            elif r < 0.8:
                parts.append(str(rng.randint(0, 999)))
            elif r < 0.9:
                parts.append(f"({rng.randint(1, 99)} {rng.choice('+-*/')} {rng.randint(1, 99)})")
            else:
                parts.append(rng.choice(["<answer>", "</answer>", "\\boxed{", "}", "$", "=", ",", ".", "\n"]))
        lines.append(" ".join(parts))
    return lines


def _synthetic_words(n: int, seed: int) -> list[str]:
    """Many distinct pseudo-words, so that BPE can learn a large vocabulary."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rng.choice(letters) for _ in range(rng.randint(3, 9))) for _ in range(n)]


def build_tokenizer(vocab_size: int):
    """A byte-level BPE tokenizer with ChatML special tokens, trained on the corpus above."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = _corpus(40_000, seed=0)
    if vocab_size > 2000:
        words = _synthetic_words(vocab_size * 8, seed=1)
        corpus += [" ".join(words[i : i + 16]) for i in range(0, len(words), 16)]
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=1 << 20,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _init_weights(model, preset: Preset, seed: int) -> None:
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            if name.endswith("norm.weight"):
                param.fill_(1.0)
            elif name.endswith(".bias"):
                param.normal_(0.0, preset.init_std, generator=gen)
            elif name.startswith("lm_head"):
                param.normal_(0.0, preset.head_std, generator=gen)
            else:
                param.normal_(0.0, preset.init_std if "embed" not in name else 1.0, generator=gen)


def build(outdir: str | Path, preset: str = "tiny", seed: int = 0) -> Path:
    """Build the model and tokenizer into ``outdir`` (overwriting) and return the path."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    spec = PRESETS[preset]
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(spec.vocab_size)
    vocab = len(tokenizer)
    config = Qwen2Config(
        vocab_size=vocab,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    torch_threads = torch.get_num_threads()
    model = Qwen2ForCausalLM(config).to(torch.float32)
    _init_weights(model, spec, seed)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None
    )
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    torch.set_num_threads(torch_threads)
    meta = {"builder": "harness.models.tiny", "build_version": BUILD_VERSION, "preset": preset, "seed": seed, **asdict(spec)}
    (out / "tiny_build.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return out


def fingerprint(path: str | Path) -> str:
    """sha256 over the model folder's files (names and bytes), for the manifest."""
    digest = hashlib.sha256()
    for file in sorted(Path(path).iterdir()):
        if file.is_file():
            digest.update(file.name.encode())
            digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()


def ensure(outdir: str | Path, preset: str = "tiny", seed: int = 0) -> Path:
    """Build the model unless ``outdir`` already holds this exact build; safe from many processes at
    once (:func:`harness.storage.build_cached`: one builds, the others wait and reuse it)."""

    def ready(folder: Path) -> bool:
        marker = folder / "tiny_build.json"
        if not marker.exists():
            return False
        meta = json.loads(marker.read_text())
        return (meta.get("build_version"), meta.get("preset"), meta.get("seed")) == (BUILD_VERSION, preset, seed)

    return build_cached(Path(outdir), lambda folder: build(folder, preset, seed), ready)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.models.tiny", description=__doc__.splitlines()[0])
    parser.add_argument("outdir")
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = build(args.outdir, args.preset, args.seed)
    print(f"built {args.preset} model in {path} (sha256 {fingerprint(path)[:16]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
