"""Tiny random language models with tokenizers trained in memory (no network, milliseconds)."""
from __future__ import annotations

from contextlib import contextmanager

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from psyling.models.loading import LanguageModel

CORPUS = [
    "The keys to the cabinet are on the table.", "The key to the cabinets is on the table.",
    "No student has ever visited the castle.", "I know what the chef cooked yesterday.",
    "While the woman bathed the baby cried loudly.", "\"Yes,\" she said; it's (really) 2024 -- finally!",
    "Dogs bark, cats meow: birds sing? Antidisestablishmentarianism is long.",
    "the quick brown fox jumps over the lazy dog", "NASA's rocket launched at 9:30 a.m. on Monday.",
] * 3
SPECIALS = ["<bos>", "<eos>", "<pad>"]
ALPHABET = [chr(c) for c in range(32, 127)]


def _wrap(tok: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")


def byte_bpe_tokenizer(vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """GPT-2 style byte-level BPE (Ġ marks a preceding space)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return _wrap(tok)


def metaspace_tokenizer(vocab_size: int = 300) -> PreTrainedTokenizerFast:
    """SentencePiece style BPE (▁ marks a preceding space; no dummy prefix on the first word, as Gemma)."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="never")
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIALS + ["<unk>"], initial_alphabet=ALPHABET + ["▁"]))
    return _wrap(tok)


def space_token_tokenizer(vocab_size: int = 300) -> PreTrainedTokenizerFast:
    """No word marker: every space is a token of its own."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(" ", behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIALS + ["<unk>"], initial_alphabet=ALPHABET))
    return _wrap(tok)


def tiny_llama(tokenizer: PreTrainedTokenizerFast, seed: int = 0, max_positions: int = 128) -> LanguageModel:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    return _lm(LlamaForCausalLM(cfg), tokenizer, "tiny-llama")


def tiny_gpt2(tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> LanguageModel:
    """GPT-2 architecture: learned absolute positions, so position ids matter under left padding."""
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=len(tokenizer), n_embd=64, n_layer=2, n_head=4, n_positions=64,
                     bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    return _lm(GPT2LMHeadModel(cfg), tokenizer, "tiny-gpt2")


def tiny_neox(tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> LanguageModel:
    """GPT-NeoX architecture (Pythia): parallel attention and MLP, rotary positions on part of each head."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(seed)
    cfg = GPTNeoXConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, max_position_embeddings=128, rotary_pct=0.5,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    return _lm(GPTNeoXForCausalLM(cfg), tokenizer, "tiny-neox")


def _lm(model, tokenizer, name: str) -> LanguageModel:
    model.eval()
    with torch.no_grad():  # sharpen the random model a little so that differences are visible
        model.get_output_embeddings().weight.mul_(8.0)
    return LanguageModel(model, tokenizer, {"id": name, "source": "test", "dtype": "float32", "device": "cpu",
                                            "class": type(model).__name__,
                                            "vocab_size": model.get_output_embeddings().weight.shape[0]})


BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def wordpiece_tokenizer(vocab_size: int = 200) -> PreTrainedTokenizerFast:
    """BERT style WordPiece (lowercasing normalizer, ## continuations, [CLS] ... [SEP] around a text)."""
    from tokenizers import normalizers, processors

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(CORPUS, trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=BERT_SPECIALS, initial_alphabet=ALPHABET))
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls_id),
                                                                                       ("[SEP]", sep_id)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


def tiny_bert(seed: int = 0, vocab_size: int = 200, max_positions: int = 128) -> LanguageModel:
    """A random 2-layer BERT masked LM with a WordPiece tokenizer trained on CORPUS."""
    from transformers import BertConfig, BertForMaskedLM

    tokenizer = wordpiece_tokenizer(vocab_size)
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=128, max_position_embeddings=max_positions,
                     pad_token_id=tokenizer.pad_token_id)
    return _lm(BertForMaskedLM(cfg), tokenizer, "tiny-bert")


@contextmanager
def forward_shapes(model):
    """Record the ``input_ids`` shape of every forward call of ``model`` while the block runs."""
    shapes: list[tuple[int, int]] = []
    original = model.forward

    def recording(*args, **kwargs):
        shapes.append(tuple(kwargs["input_ids"].shape))
        return original(*args, **kwargs)

    model.forward = recording
    try:
        yield shapes
    finally:
        model.forward = original
