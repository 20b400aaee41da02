"""Playlist titles: the normalisation and the sentencepiece BPE tokenizer the title model reads.

Normalisation (the reference design's): keep Hangul syllables, Latin letters, digits, '&' and spaces,
replace everything else by a space, lower-case, collapse runs of whitespace, strip.

Special pieces: id 0 is ``[pad]``, id 1 ``<unk>``, then the user symbols ``[songs]`` (songs CLS),
``[tags]`` (tags CLS), ``[sep]`` and ``[mask]``; normalised titles can never contain them.
"""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path

import sentencepiece as spm

_DROP = re.compile(r"[^가-힣a-zA-Z0-9& ]")
_SPACES = re.compile(r"\s+")
PAD, UNK = "[pad]", "<unk>"
SONGS_CLS, TAGS_CLS, SEP, MASK = "[songs]", "[tags]", "[sep]", "[mask]"
SPECIAL = (SONGS_CLS, TAGS_CLS, SEP, MASK)


def normalise_title(title: str) -> str:
    return _SPACES.sub(" ", _DROP.sub(" ", title)).strip().lower()


def train_tokenizer(titles: list[str], vocab_size: int, character_coverage: float, seed: int) -> bytes:
    """Train the BPE model on the non-empty normalised titles; returns the serialized model.

    Deterministic: one thread, input in the given order, a fixed random seed. When the titles hold
    fewer pieces than ``vocab_size`` the vocabulary is as large as they allow.
    """
    lines = [t for t in (normalise_title(x) for x in titles) if t]
    if not lines:
        raise ValueError("no training playlist has a non-empty normalised title: cannot train the tokenizer")
    spm.set_random_generator_seed(seed)
    model = io.BytesIO()  # trained in memory: the model holds no temporary path, so runs are byte-identical
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, model_type="bpe",
        vocab_size=vocab_size, hard_vocab_limit=False, character_coverage=character_coverage,
        pad_id=0, pad_piece=PAD, unk_id=1, unk_piece=UNK, bos_id=-1, eos_id=-1,
        user_defined_symbols=list(SPECIAL), normalization_rule_name="identity",
        num_threads=1, shuffle_input_sentence=False, input_sentence_size=0, minloglevel=2,
    )
    return model.getvalue()


class TitleTokenizer:
    """Encodes titles to piece ids with a trained model (file or serialized bytes)."""

    def __init__(self, model: bytes | str | Path):
        self.model_bytes = model if isinstance(model, bytes) else Path(model).read_bytes()
        self.sp = spm.SentencePieceProcessor(model_proto=self.model_bytes)
        self.pad_id = self.sp.piece_to_id(PAD)
        self.songs_cls_id, self.tags_cls_id, self.sep_id, self.mask_id = (self.sp.piece_to_id(p) for p in SPECIAL)
        self.first_piece_id = max(self.pad_id, self.songs_cls_id, self.tags_cls_id, self.sep_id, self.mask_id) + 1

    @property
    def size(self) -> int:
        return self.sp.get_piece_size()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.model_bytes).hexdigest()

    def encode(self, title: str, max_pieces: int | None = None) -> list[int]:
        ids = self.sp.encode(normalise_title(title)) if normalise_title(title) else []
        return ids[:max_pieces] if max_pieces is not None else ids

    def decode(self, ids: list[int]) -> str:
        return self.sp.decode(ids)
