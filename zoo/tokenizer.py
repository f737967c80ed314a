"""A real ``CLIPTokenizer`` over the tiny domain's closed vocabulary.

CLIP's tokenizer is byte-pair encoding: it needs a vocabulary and a ranked list of merges.
Building merges word by word makes merges of different words interfere (a merge learnt for
one word fires inside another and strands it in pieces), so merges are added until every
domain word encodes to exactly one token (a fix-point loop, checked at the end).
"""
from __future__ import annotations

import string

from transformers import CLIPTokenizer

from zoo.domain import vocabulary

MAX_LENGTH_TOKENS = 24  # longest caption (a list of three objects) is 20 tokens with the start/end tokens
_BOS, _EOS = "<|startoftext|>", "<|endoftext|>"


def _bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """CLIP's BPE on one word (characters, last one with ``</w>``), lowest rank first."""
    parts = list(word[:-1]) + [word[-1] + "</w>"]
    while len(parts) > 1:
        pairs = [(ranks.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
        rank, i = min(pairs)
        if rank == 1 << 30:
            break
        parts = parts[:i] + [parts[i] + parts[i + 1]] + parts[i + 2:]
    return parts


def build_vocab_and_merges(words: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary (token -> id) and merges under which every word of ``words`` is one token."""
    chars = list(string.ascii_lowercase) + [",", "."]
    tokens = chars + [c + "</w>" for c in chars]
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    changed = True
    while changed:
        changed = False
        for w in words:
            parts = _bpe(w, ranks)
            if len(parts) > 1:
                pair = (parts[0], parts[1])
                ranks[pair] = len(merges)
                merges.append(pair)
                if pair[0] + pair[1] not in tokens:
                    tokens.append(pair[0] + pair[1])
                changed = True
    tokens += [_BOS, _EOS]
    return {t: i for i, t in enumerate(tokens)}, merges


def build_tokenizer() -> CLIPTokenizer:
    """The domain tokenizer; max length :data:`MAX_LENGTH_TOKENS`, padding with the end token."""
    words = vocabulary() + ["."]
    vocab, merges = build_vocab_and_merges(words)
    tok = CLIPTokenizer(
        vocab=vocab, merges=list(merges), unk_token=_EOS, bos_token=_BOS,
        eos_token=_EOS, pad_token=_EOS, model_max_length=MAX_LENGTH_TOKENS,
    )
    for w in words:
        ids = tok(w, add_special_tokens=False).input_ids
        if len(ids) != 1:
            raise RuntimeError(f"domain word {w!r} encodes to {len(ids)} tokens, expected 1")
    return tok
