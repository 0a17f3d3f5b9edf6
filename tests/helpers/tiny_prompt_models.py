"""Tiny random prompt models built from configs, with word-level tokenizers trained here (no Hub): a T5
(word2sen), a GPT-2 (llm) and a BLIP captioner (caption), saved as Hub folders; `build_prompt_models`
makes all three."""
from __future__ import annotations

from pathlib import Path

import torch

CORPUS = [
    "a photo of a zero digit on the table",
    "one two three four five six seven eight nine",
    "the dog runs in the park with a ball",
    "a cat sits on a mat in the sun",
] * 4
SPECIAL = ["<pad>", "</s>", "<unk>", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]


def offline_tokenizer(post: str = "$A </s>"):
    """A word-level tokenizer trained here on a few sentences (no Hub), wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(CORPUS, trainers.WordLevelTrainer(special_tokens=SPECIAL))
    tok.decoder = decoders.WordPiece()
    specials = [t for t in ("</s>", "[CLS]", "[SEP]") if t in post]
    tok.post_processor = processors.TemplateProcessing(
        single=post, special_tokens=[(t, tok.token_to_id(t)) for t in specials]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]", bos_token="[DEC]",
    )


def _save(model_cls, cfg, tk, path: Path) -> Path:
    """A random model of `model_cls` (seed 0) and its tokenizer, saved in `path`."""
    torch.manual_seed(0)
    model_cls(cfg).save_pretrained(path)
    tk.save_pretrained(path)
    return path


def build_t5(path: Path) -> Path:
    from transformers import T5Config, T5ForConditionalGeneration

    tk = offline_tokenizer()
    cfg = T5Config(
        vocab_size=len(tk), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        decoder_start_token_id=tk.pad_token_id, pad_token_id=tk.pad_token_id, eos_token_id=tk.eos_token_id,
    )
    return _save(T5ForConditionalGeneration, cfg, tk, path)


def build_gpt2(path: Path) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    tk = offline_tokenizer("$A")
    cfg = GPT2Config(
        vocab_size=len(tk), n_embd=32, n_layer=2, n_head=2, n_positions=128,
        bos_token_id=tk.eos_token_id, eos_token_id=tk.eos_token_id, pad_token_id=tk.pad_token_id,
    )
    return _save(GPT2LMHeadModel, cfg, tk, path)


def build_blip(path: Path) -> Path:
    from transformers import (
        BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor, BlipTextConfig,
        BlipVisionConfig,
    )

    tk = offline_tokenizer("[CLS] $A [SEP]")
    text = BlipTextConfig(
        vocab_size=len(tk), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=64, encoder_hidden_size=32,
        bos_token_id=tk.bos_token_id, pad_token_id=tk.pad_token_id, sep_token_id=tk.sep_token_id,
    )
    vision = BlipVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=32, patch_size=8,
    )
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(
        BlipConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=32)
    )
    model.save_pretrained(path)
    BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tk).save_pretrained(path)
    return path


def build_prompt_models(root: Path) -> dict[str, Path]:
    """The three models under `root`: {"t5": ..., "gpt2": ..., "blip": ...}."""
    return {"t5": build_t5(root / "t5"), "gpt2": build_gpt2(root / "gpt2"), "blip": build_blip(root / "blip")}
