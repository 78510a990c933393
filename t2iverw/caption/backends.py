"""Where captions come from: an OpenAI-compatible server, transformers in-process, or a metadata template.

All three answer `generate(prompt, image, meta, seed) -> Reply`, so the run loop, the
records and the QA are the same whichever wrote the text.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from PIL import Image

from t2iverw.caption.client import EndpointPool, ServedModel
from t2iverw.caption.image import jpeg_data_url
from t2iverw.errors import T2IError

BACKENDS = ("openai", "transformers", "template")


@dataclass
class Sampling:
    max_tokens: int = 256
    temperature: float = 0.7
    seed: int = 0


@dataclass
class Reply:
    text: str
    finish_reason: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    endpoint: str | None = None


class Backend(Protocol):
    name: str
    model: str  # after start(): the model that actually answers (a server's own name for it)
    checkpoint: str | None  # what that name stands for: the server's loaded checkpoint, a revision or hash
    generative: bool  # False: the text ignores image, prompt and sampling (the template)

    async def start(self) -> None: ...

    async def generate(self, prompt: str, image: Image.Image | None, meta: dict, sampling: Sampling) -> Reply: ...

    async def aclose(self) -> None: ...


class OpenAIBackend:
    """Chat completions with the image as a base64 JPEG data URL (vLLM, `transformers serve`, any compatible server)."""

    name = "openai"
    generative = True  # reads the image, the prompt and the sampling parameters

    def __init__(self, model: str | None, endpoints: list[str], *, timeout: float, retries: int, backoff: float,
                 wait: float = 0.0):
        self.requested, self.wait = model, wait
        self.model, self.checkpoint = model or "", None
        self.pool = EndpointPool(endpoints, timeout=timeout, retries=retries, backoff=backoff)

    async def start(self) -> None:
        """Wait for a server, then settle which model the records name: the one it serves."""
        served = await self.pool.start(self.wait)
        self.model, self.checkpoint = resolve_model(self.requested, served, self.pool.endpoints[0].url)

    async def generate(self, prompt: str, image: Image.Image | None, meta: dict, sampling: Sampling) -> Reply:
        url = await asyncio.to_thread(jpeg_data_url, image)
        content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": prompt}]
        completion, endpoint = await self.pool.chat(
            model=self.model,
            messages=[{"role": "user", "content": content}],
            max_tokens=sampling.max_tokens,  # always sent: some servers otherwise generate for a long time
            temperature=sampling.temperature,
            seed=sampling.seed,
        )
        choice = completion.choices[0]
        usage = completion.usage
        return Reply(
            text=(choice.message.content or "").strip(),
            finish_reason=choice.finish_reason,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            endpoint=endpoint,
        )

    async def aclose(self) -> None:
        await self.pool.aclose()


class TransformersBackend:
    """In-process generation for small models (one GPU without vLLM, or CPU); one image at a time."""

    name = "transformers"
    generative = True

    def __init__(self, model: str):
        from t2iverw.checkpoints import model_identity

        identity = model_identity(model)
        self.path = model
        self.model, self.checkpoint = identity["model"], identity["revision"]
        self.processor = self.net = None
        self._lock = asyncio.Lock()

    def load(self) -> None:
        """Load the weights (the worker calls this only once there is something to caption)."""
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        try:
            self.processor = AutoProcessor.from_pretrained(self.path)
            self.net = AutoModelForImageTextToText.from_pretrained(self.path, dtype=dtype).to(self.device).eval()
        except (OSError, ValueError) as exc:
            raise T2IError(f"cannot load model {self.path!r} with transformers: {str(exc).splitlines()[0]}") from None

    async def start(self) -> None:
        pass

    async def generate(self, prompt: str, image: Image.Image | None, meta: dict, sampling: Sampling) -> Reply:
        async with self._lock:
            return await asyncio.to_thread(self._generate, prompt, image, sampling)

    def _generate(self, prompt: str, image: Image.Image, sampling: Sampling) -> Reply:
        import torch

        messages = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": prompt}]}]
        inputs = self.processor.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        ).to(self.device)
        torch.manual_seed(sampling.seed)
        sample = sampling.temperature > 0
        with torch.inference_mode():
            out = self.net.generate(
                **inputs, max_new_tokens=sampling.max_tokens, do_sample=sample,
                temperature=sampling.temperature if sample else None,
            )
        new = out[0, inputs["input_ids"].shape[1]:]
        eos = self.net.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, list) else [eos])
        stopped = len(new) > 0 and int(new[-1]) in eos
        return Reply(
            text=self.processor.decode(new, skip_special_tokens=True).strip(),
            finish_reason="stop" if stopped or len(new) < sampling.max_tokens else "length",
            prompt_tokens=int(inputs["input_ids"].shape[1]),
            completion_tokens=len(new),
        )

    async def aclose(self) -> None:
        pass


class TemplateBackend:
    """A caption from the VERI-Wild metadata alone: the no-model baseline, and the demo's captioner."""

    name = "template"
    generative = False
    model = "metadata-template"
    checkpoint = None

    async def start(self) -> None:
        pass

    async def generate(self, prompt: str, image: Image.Image | None, meta: dict, sampling: Sampling) -> Reply:
        return Reply(text=template_caption(meta), finish_reason="stop")

    async def aclose(self) -> None:
        pass


def template_caption(meta: dict) -> str:
    """Neutral sentences around the known colour, type and model; it claims nothing the metadata does not say."""
    color = f"{meta['color']} " if meta.get("color") else ""
    vtype = meta.get("type") or "vehicle"
    made = f", a {meta['model']}," if meta.get("model") else ""
    return (
        f"A {color}{vtype}{made} seen by a road camera. Its {color}body is the main feature of this vehicle. "
        f"Its windows, headlights or tail lights, wheels and roof are part of the view, but their details are not "
        f"described here because this caption is written from the dataset metadata only."
    )


def resolve_model(requested: str | None, served: list[ServedModel], url: str) -> tuple[str, str | None]:
    """(model name, checkpoint) that requests use and records carry.

    A server that names its checkpoints (vLLM lists a `root` per served model) serves
    exactly what it lists: a --model it does not list is a mistake caught before any
    request. A server that loads on demand (`transformers serve` lists its cache) takes
    the --model it is given.
    """
    names = [m.id for m in served]
    fixed = any(m.checkpoint for m in served)
    if requested is None:
        if len(served) == 1:
            return served[0].id, served[0].checkpoint
        listing = f"serves {', '.join(names)}" if names else "lists no model"
        raise T2IError(f"the server at {url} {listing}; name the model to caption with --model")
    match = next((m for m in served if m.id == requested), None)
    if match is not None:
        return match.id, match.checkpoint
    if fixed:
        raise T2IError(f"the server at {url} serves {', '.join(names)} (from /v1/models), not --model {requested!r}; "
                       f"drop --model or pass the served name")
    return requested, None


def make_backend(backend: str, *, model: str | None, endpoints: list[str], timeout: float, retries: int,
                 backoff: float, wait: float = 0.0) -> Backend:
    if backend == "openai":
        return OpenAIBackend(model, endpoints, timeout=timeout, retries=retries, backoff=backoff, wait=wait)
    if backend == "transformers":
        if not model:
            raise T2IError("--backend transformers needs --model (a hub id or a local directory)")
        return TransformersBackend(model)
    if backend == "template":
        return TemplateBackend()
    raise T2IError(f"unknown caption backend {backend!r}; choose one of {', '.join(BACKENDS)}")
