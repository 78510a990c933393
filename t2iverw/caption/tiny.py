"""A tiny Qwen3-VL: the real architecture at toy width, saved like a hub checkpoint, for tests and benchmarks.

A byte-level BPE tokenizer trained offline with `tokenizers` (Qwen's special tokens, a
minimal Qwen-style chat template) and an image processor that keeps crops to a few
patches, so CPU generation takes milliseconds. With random weights its text is garbage
that never ends (every reply is cut off); `build_scripted_qwen3vl` sets the weights of
the same model so that it always answers one sentence and stops. Both `transformers
serve` and vLLM load them (vLLM's CPU attention needs head size 32: HEAD_DIM).
"""

from __future__ import annotations

from pathlib import Path

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or part['type'] == 'image_url' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

CORPUS = [
    "A white sedan with a chrome grille, slim headlights and five-spoke alloy wheels.",
    "The black SUV has roof rails, tinted rear windows, a sunroof and a sticker on the windshield.",
    "A red hatchback with round tail lights, a dark bumper and silver side mirrors.",
    "Blue pickup truck, large grille, rectangular headlights, black wheels with many spokes.",
    "Describe the vehicle: body colour, type, grille, lights, wheels, roof, windows, bumper, mirrors.",
] * 20

# vLLM's CPU attention accepts head sizes 32, 64, 80, ... only (16 kills its engine on the first
# request); Qwen3-VL's interleaved M-RoPE sections (t, h, w) must sum to head_dim / 2.
HEAD_DIM = 32
MROPE_SECTION = [6, 5, 5]


def build_tiny_qwen3vl(out: Path, *, seed: int = 0) -> Path:
    """Write config, random weights, tokenizer, chat template and processor of a ~100k-parameter Qwen3-VL to `out`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2VLImageProcessor,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        CORPUS,
        trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()),
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=CHAT_TEMPLATE
    )
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL}

    config = Qwen3VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
            num_attention_heads=2, num_key_value_heads=1, head_dim=HEAD_DIM, max_position_embeddings=2048,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": MROPE_SECTION, "mrope_interleaved": True},
            eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(
            depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32, patch_size=16,
            spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64, deepstack_visual_indexes=[0],
        ),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
    )
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(out)

    pixels = {"shortest_edge": 32 * 32, "longest_edge": 64 * 64}
    processor = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=pixels, patch_size=16, merge_size=2, temporal_patch_size=2),
        video_processor=Qwen3VLVideoProcessor(size=pixels, patch_size=16, merge_size=2, temporal_patch_size=2),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(out)
    return out


SCRIPTED_ANSWER = "A blue sedan with black wheels, slim lights and roof rails."


def build_scripted_qwen3vl(random_dir: Path, out: Path, answer: str = SCRIPTED_ANSWER) -> Path:
    """The tiny checkpoint with weights set so that greedy or sampled decoding answers `answer`, then stops.

    Attention and MLP outputs are zeroed, so each hidden state is its token's embedding,
    and each row of the output head points at the embedding of the token before it in
    the chain (end of generation prompt, the answer's tokens, <|im_end|>).
    """
    import torch
    from transformers import AutoProcessor, Qwen3VLForConditionalGeneration

    model = Qwen3VLForConditionalGeneration.from_pretrained(random_dir)
    processor = AutoProcessor.from_pretrained(random_dir)
    tok = processor.tokenizer
    prompt = processor.apply_chat_template([{"role": "user", "content": [{"type": "text", "text": "x"}]}],
                                           add_generation_prompt=True, tokenize=True)
    chain = [list(prompt[0] if isinstance(prompt[0], list) else prompt)[-1],
             *tok(answer, add_special_tokens=False).input_ids, tok.convert_tokens_to_ids("<|im_end|>")]
    assert len(set(chain)) == len(chain), "each token of the chain must have one successor"
    text = model.model.language_model
    with torch.no_grad():
        for layer in text.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        head = torch.zeros_like(model.lm_head.weight)
        for src, dst in zip(chain, chain[1:]):
            emb = text.embed_tokens.weight[src]
            head[dst] = 100 * emb / emb.norm()
        model.lm_head.weight.copy_(head)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
