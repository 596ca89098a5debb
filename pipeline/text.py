"""Transcript tokenisation for the loader, with no downloads.

Two tokenizers, one interface: `tok(texts) -> (ids long [n, L], mask bool [n, L])`, mask True
on real tokens. Sequences longer than L are cut, but the closing token (eos) is kept, because
CLIP-style text towers read their sentence feature at the eos position.

- ByteTokenizer (the default): UTF-8 bytes are ids 0-255, then pad 256, bos 257, eos 258
  (vocab 259). The trainer's model (pipeline.train, vocab_size 259) uses the same ids.
- FileTokenizer: a local `tokenizer.json` read with the `tokenizers` package (for a CLIP BPE,
  say). `load_tokenizer(path)` picks one; a directory means DIR/tokenizer.json.
"""
from __future__ import annotations

import os

import numpy as np
import torch

PAD, BOS, EOS = 256, 257, 258


def _pack(seqs: list[list[int]], length: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = np.full((len(seqs), length), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), length), dtype=bool)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = s
        mask[i, :len(s)] = True
    return torch.from_numpy(ids), torch.from_numpy(mask)


class ByteTokenizer:
    """bos + UTF-8 bytes + eos, cut (eos kept) and padded to max_len."""

    vocab_size = 259
    pad_id, bos_id, eos_id = PAD, BOS, EOS

    def __init__(self, max_len: int = 32):
        if max_len < 2:
            raise ValueError("max_len must leave room for bos and eos")
        self.max_len = max_len

    def encode(self, text: str) -> list[int]:
        return [BOS, *text.encode("utf-8")[: self.max_len - 2], EOS]

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids if int(i) < 256).decode("utf-8", errors="replace")

    def __call__(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return _pack([self.encode(t) for t in texts], self.max_len, PAD)


class FileTokenizer:
    """A `tokenizers` tokenizer from a local tokenizer.json (its own special tokens, e.g. CLIP's
    <|startoftext|>/<|endoftext|>, come from its post-processor)."""

    def __init__(self, path: str, max_len: int = 32, pad_id: int | None = None):
        from tokenizers import Tokenizer
        self.path, self.max_len = path, max_len
        self.tok = Tokenizer.from_file(path)
        self.tok.no_truncation()          # we cut ourselves, keeping the final special token
        self.tok.no_padding()
        self.vocab_size = self.tok.get_vocab_size(with_added_tokens=True)
        self.pad_id = pad_id if pad_id is not None else self._find_pad()

    def _find_pad(self) -> int:
        for name in ("<pad>", "[PAD]", "<|pad|>", "<|endoftext|>", "</s>"):
            i = self.tok.token_to_id(name)
            if i is not None:
                return i
        return 0                           # the mask, not the id, tells padding apart

    def encode(self, text: str) -> list[int]:
        enc = self.tok.encode(text)
        ids = enc.ids
        if len(ids) > self.max_len:
            # keep the last token when the post-processor added it (eos): the text tower reads it
            tail = ids[-1:] if enc.special_tokens_mask and enc.special_tokens_mask[-1] else []
            ids = ids[: self.max_len - len(tail)] + tail
        return ids

    def decode(self, ids) -> str:
        return self.tok.decode([int(i) for i in ids])

    def __call__(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return _pack([self.encode(t) for t in texts], self.max_len, self.pad_id)

    def __reduce__(self):                  # picklable for DataLoader workers: reload from the file
        return (FileTokenizer, (self.path, self.max_len, self.pad_id))


def load_tokenizer(path: str | None = None, max_len: int = 32):
    """None, '' or 'bytes' -> ByteTokenizer; a tokenizer.json file, or a directory holding one,
    -> FileTokenizer. Never downloads: a name that is not a local path raises."""
    if not path or path == "bytes":
        return ByteTokenizer(max_len)
    if os.path.isdir(path):
        path = os.path.join(path, "tokenizer.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no tokenizer.json at {path!r} (tokenizers are loaded from local files only)")
    return FileTokenizer(path, max_len)
