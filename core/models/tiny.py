"""The shipped ``tiny`` base model: a ~1M-parameter Llama with a word-level tokenizer.

Its weights live in core/assets/tiny (made by scripts/pretrain_tiny.py), so the
demo finetunes offline in minutes. head_dim is 32 because vLLM's CPU attention
supports no smaller head size.
"""

from __future__ import annotations

from pathlib import Path

TINY_DIR = Path(__file__).resolve().parent.parent / "assets" / "tiny"
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]


def build_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    from overmem.data.synthetic import vocabulary

    vocab = {w: i for i, w in enumerate(SPECIALS + vocabulary())}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # BOS on every encoded text, like Llama tokenizers (pretraining used it too)
    tk.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=512,
    )


def tiny_config(tokenizer, hidden: int = 128, layers: int = 4):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 32,
        num_key_value_heads=hidden // 32,
        head_dim=32,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        rope_theta=10000.0,
    )
