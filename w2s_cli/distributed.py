"""Running under torchrun: which rank we are, waiting for the others, and combining moments across ranks.

Nothing here imports torch unless the process was started by torchrun (WORLD_SIZE > 1), so single-process
use never pays for it. CPU runs use the gloo backend, CUDA runs nccl for extraction; moments are always
gathered on CPU (gloo-compatible objects) and merged in rank order on every rank, so all ranks hold the
same float64 numbers a single process would (up to the order of a few additions).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from w2s_cli.numerics.moments import Moments, merge_all

# rows per chunk of a stage's pass over an artifact (and the unit split over ranks); W2S_CHUNK_ROWS sets it
CHUNK_ROWS = int(os.environ.get("W2S_CHUNK_ROWS", "8192"))


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


_WORLD: World | None = None


def world() -> World:
    """This process's place among torchrun's; initialises the process group on first use."""
    global _WORLD
    if _WORLD is not None:
        return _WORLD
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        _WORLD = World()
        return _WORLD
    import torch
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        nccl = torch.cuda.is_available() and os.environ.get("W2S_DIST_BACKEND", "nccl") == "nccl"
        if nccl:
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if nccl else "gloo")
    _WORLD = World(dist.get_rank(), dist.get_world_size(), local_rank)
    return _WORLD


def joined() -> World | None:
    """This process's World if it has met the other ranks (or checked that it is alone), else None."""
    return _WORLD


def barrier() -> None:
    if world().size > 1:
        import torch.distributed as dist

        dist.barrier()


def all_gather(obj):
    """Every rank's `obj`, in rank order (a single process: [obj])."""
    if world().size == 1:
        return [obj]
    import torch.distributed as dist

    out = [None] * world().size
    dist.all_gather_object(out, obj)
    return out


def all_reduce_moments(m: Moments) -> Moments:
    """The moments of all ranks' rows together."""
    return merge_all(all_gather(m))


def main_writes(write, out):
    """Run `write()` (which writes `out`) on rank 0 only, wait for it, and return `out` on every rank."""
    if world().main:
        write()
    barrier()
    return out


def shutdown() -> None:
    global _WORLD
    if _WORLD is not None and _WORLD.size > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    _WORLD = None


def mine(k: int) -> bool:
    """Whether chunk k of a pass over rows is this rank's (round-robin over ranks)."""
    w = world()
    return k % w.size == w.rank


def gather_rows(parts: list[tuple]) -> list[tuple]:
    """Every rank's (row indices, block, ...) pieces, merged and sorted by their first row index."""
    if world().size == 1:
        return parts
    merged = [piece for rank_parts in all_gather(parts) for piece in rank_parts]
    return sorted(merged, key=lambda piece: int(piece[0][0]) if len(piece[0]) else -1)
