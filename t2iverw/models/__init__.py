"""The benchmark's contestants, by name: one module each, all behind `t2iverw.models.base.RetrievalModel`.

Adding a model: write `t2iverw/models/NAME.py` (its RetrievalModel subclass and config
dataclass), its configs `benchmark/configs/NAME.yaml` (full size) and `NAME-tiny.yaml`
(CPU), its table in benchmark/FIDELITY.md, and one line here.
"""

from __future__ import annotations

import importlib

from t2iverw.errors import T2IError

# name -> "module:class"; imported only when used, so `t2iverw --help` stays instant
MODELS: dict[str, str] = {
    "pfcvr": "t2iverw.models.pfcvr:PFCVR",
    "irra": "t2iverw.models.irra:IRRA",
    "clip": "t2iverw.models.clip:ZeroShotCLIP",
    "ivt": "t2iverw.models.ivt:IVT",
    "cpsl": "t2iverw.models.cpsl:CPSL",
}


def get(name: str):
    """The RetrievalModel subclass registered as `name`."""
    if name not in MODELS:
        raise T2IError(f"unknown model {name!r}; known models: {', '.join(MODELS)} (`t2iverw models`)")
    module, cls = MODELS[name].split(":")
    return getattr(importlib.import_module(module), cls)
