"""An offline CLIP tokenizer: the real 49,408-token CLIP BPE, built without the hub.

The BPE merges ship inside the `open_clip_torch` wheel; the vocabulary is derived from
them exactly as CLIP's own SimpleTokenizer does (byte symbols, the same with '</w>',
the merges, then the two special tokens), so token ids match open_clip's.
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

from t2iverw.errors import T2IError

N_MERGES = 49152 - 256 - 2


def clip_bpe_path() -> Path:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise T2IError("building a CLIP tokenizer offline needs open_clip_torch (pip install open_clip_torch)")
    return Path(next(iter(spec.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz"


def build_clip_tokenizer(out: str | Path | None = None, model_max_length: int = 77):
    """Build the CLIP BPE tokenizer offline; save it to `out` with save_pretrained when given."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    lines = gzip.open(clip_bpe_path(), "rt", encoding="utf-8").read().split("\n")
    merges = [tuple(m.split()) for m in lines[1 : N_MERGES + 1]]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    tok = CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=merges, model_max_length=model_max_length)
    if out is not None:
        tok.save_pretrained(out)
    return tok
