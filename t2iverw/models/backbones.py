"""CLIP backbones shared by the CLIP-based models: loading, a random tiny CLIP, input-size and vocabulary changes."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from torch import nn

from t2iverw.errors import T2IError

MASK_TOKEN = "<|mask|>"


def load_clip(source: str | Path, image_size: int):
    """CLIPModel and its tokenizer from a hub id or local directory, positions resized to `image_size`."""
    from transformers import AutoTokenizer, CLIPModel

    try:
        clip = CLIPModel.from_pretrained(str(source))
        tokenizer = AutoTokenizer.from_pretrained(str(source))
    except OSError as exc:
        raise T2IError(f"cannot load CLIP weights/tokenizer from {source!r}: {exc}".splitlines()[0]) from None
    resize_position_embeddings(clip, image_size)
    add_mask_token(clip, tokenizer)
    return clip, tokenizer


def save_random_clip(out: str | Path, clip_kwargs: dict) -> Path:
    """Write a randomly initialised CLIPModel (from CLIPConfig kwargs) and the offline CLIP tokenizer to `out`.

    The weights are drawn from seed 0 in a forked RNG, so the same kwargs give the same
    backbone and the caller's seed (the run's `seed`: shuffling, masking, new modules) is
    left as it was: reseeding the global RNG here made every run's `seed` ineffective.
    """
    from transformers import CLIPConfig, CLIPModel

    from t2iverw.clip_tokenizer import build_clip_tokenizer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        clip = CLIPModel(CLIPConfig(**clip_kwargs))
    clip.save_pretrained(out)
    build_clip_tokenizer(out)
    return Path(out)


def random_clip_source(cfg, workdir: Path, write: bool = True) -> str:
    """The CLIP to load: `cfg.clip`, or the random one `cfg.random_clip` describes, written
    once into `workdir/backbone_init` (on the main process: `write`) so every process and
    `predict` start from the same weights."""
    if cfg.random_clip is None:
        return cfg.clip
    init = Path(workdir) / "backbone_init"
    if write and not (init / "config.json").exists():
        tmp = init.with_name("backbone_init.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        save_random_clip(tmp, cfg.random_clip)
        tmp.rename(init)
    return str(init)


def save_clip_run_files(clip, tokenizer, folder: Path) -> None:
    """The backbone's config and tokenizer: what `clip_from_run` rebuilds the architecture from."""
    clip.config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def clip_from_run(folder: Path):
    """(CLIPModel with the run's architecture and random weights, tokenizer): the engine loads the weights."""
    from transformers import AutoTokenizer, CLIPConfig, CLIPModel

    return CLIPModel(CLIPConfig.from_pretrained(folder)), AutoTokenizer.from_pretrained(folder)


def resize_position_embeddings(clip, image_size: int) -> None:
    """Interpolate the vision position embeddings to `image_size` for good (IRRA does the same)."""
    emb = clip.vision_model.embeddings
    if emb.image_size == image_size:
        return
    if image_size % emb.patch_size:
        raise T2IError(f"image_size {image_size} is not a multiple of the patch size {emb.patch_size}")
    n = (image_size // emb.patch_size) ** 2
    with torch.no_grad():
        dummy = torch.zeros(1, n + 1, emb.embed_dim)
        weight = emb.interpolate_pos_encoding(dummy, image_size, image_size)[0]
    emb.position_embedding = nn.Embedding(n + 1, emb.embed_dim, _weight=weight.clone())
    emb.register_buffer("position_ids", torch.arange(n + 1).expand((1, -1)), persistent=False)
    emb.image_size, emb.num_patches, emb.num_positions = image_size, n, n + 1
    clip.config.vision_config.image_size = image_size


def add_mask_token(clip, tokenizer) -> None:
    """Give the tokenizer a mask token for MLM (CLIP has none) and grow the embeddings to match."""
    if tokenizer.mask_token is None:
        tokenizer.add_special_tokens({"mask_token": MASK_TOKEN})
    old = clip.text_model.embeddings.token_embedding
    if old.num_embeddings >= len(tokenizer):
        return
    new = nn.Embedding(len(tokenizer), old.embedding_dim)
    with torch.no_grad():  # new rows start at the mean embedding, as transformers' mean_resizing does
        new.weight[: old.num_embeddings] = old.weight
        new.weight[old.num_embeddings :] = old.weight.mean(dim=0)
    clip.text_model.embeddings.token_embedding = new
    clip.config.text_config.vocab_size = len(tokenizer)
