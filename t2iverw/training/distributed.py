"""SDM over the global batch when training runs in several processes.

SDM compares every image of a batch with every caption, so a batch split over N
processes would otherwise be N smaller batches: a different loss from the single-GPU
run it reproduces. Features are gathered with autograd-aware collectives; every rank
then computes the same global loss, and the gradient that flows back to each rank's
own features, averaged by DDP, is exactly the single-process gradient.
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Each tensor concatenated over the ranks in rank order (unchanged in one process).

    Every rank must pass the same shapes (accelerate's even batches guarantee it).
    """
    if world_size() == 1:
        return tensors
    from torch.distributed.nn.functional import all_gather

    out = []
    for t in tensors:
        if t.requires_grad:
            with warnings.catch_warnings():  # its suggested successor is private and has no gloo backward
                warnings.simplefilter("ignore", FutureWarning)
                out.append(torch.cat(all_gather(t), dim=0))
        else:
            parts = [torch.empty_like(t) for _ in range(world_size())]
            dist.all_gather(parts, t.contiguous())
            out.append(torch.cat(parts, dim=0))
    return tuple(out)
