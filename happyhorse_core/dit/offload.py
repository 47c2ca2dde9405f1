"""Block swap: keep N transformer blocks on the compute device, stream the others from CPU memory.

    swap = BlockSwap(model, blocks_on_device=20, device="cuda:0", pin_memory=True)
    model(...)                      # unchanged call; hooks move blocks in and out
    print(swap.summary())           # HappyHorse: 20/40 blocks on cuda:0 (5.5 GB), 20 offloaded (25.1 GB)

Design (the model is not forked: forward pre/post hooks on `model.block.layers[i]`):
- Which blocks stay: the N smallest, i.e. the shared middle layers first (a sandwich block has
  three expert weight sets, ~3x the bytes), spread evenly among the swapped ones so that a
  swapped block's copy can overlap the compute of the resident block before it.
- Swapped blocks keep a CPU master copy (optionally pinned) for good; "offloading" a block
  after use only drops its device copy, nothing is copied back (weights are read-only).
- One device slot serves all swapped blocks, so at most N + 1 blocks are ever on the device.
  On CUDA the next swapped block is copied on a side stream as soon as the slot is free (after
  the previous swapped block ran, or while resident blocks run); the compute stream waits on
  an event before using it. On other devices the same bookkeeping runs with plain
  (synchronous, on CPU no-op) moves, so outputs are bit-identical with and without swapping.
  The counters (and torch.cuda.max_memory_allocated) see at most N + 1 blocks; the CUDA
  caching allocator may briefly *reserve* one more block while the memory of the block just
  dropped waits for its queued kernels to finish.
- Works for any model whose repeated blocks sit in one ModuleList (`layers=`, default
  `model.block.layers`); everything outside those blocks is moved to the device once.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

log = logging.getLogger("HappyHorse")


def module_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


@dataclass(frozen=True)
class SwapPlan:
    resident: tuple[int, ...]  # block indices kept on the device
    swapped: tuple[int, ...]  # block indices streamed from CPU memory
    block_bytes: tuple[int, ...]  # bytes of every block

    @property
    def resident_bytes(self) -> int:
        return sum(self.block_bytes[i] for i in self.resident)

    @property
    def swapped_bytes(self) -> int:
        return sum(self.block_bytes[i] for i in self.swapped)

    @property
    def peak_bytes(self) -> int:
        """Block bytes on the device at worst: the resident blocks + the largest swapped one."""
        return self.resident_bytes + max((self.block_bytes[i] for i in self.swapped), default=0)


def plan_block_swap(layers: nn.ModuleList, blocks_on_device: int) -> SwapPlan:
    """Choose the resident blocks (module docstring); works on meta-device models too."""
    return plan_from_sizes([module_bytes(layer) for layer in layers], blocks_on_device)


def plan_from_sizes(sizes: list[int] | tuple[int, ...], blocks_on_device: int) -> SwapPlan:
    """plan_block_swap from the blocks' byte sizes alone (memory planning without a model)."""
    sizes = list(sizes)
    if not 0 <= blocks_on_device <= len(sizes):
        raise ValueError(f"blocks_on_device must be between 0 and {len(sizes)} (the number of transformer blocks), "
                         f"got {blocks_on_device}")
    chosen: list[int] = []
    for size in sorted(set(sizes)):
        need = blocks_on_device - len(chosen)
        if need <= 0:
            break
        group = [i for i, s in enumerate(sizes) if s == size]
        chosen += group if need >= len(group) else [group[(2 * k + 1) * len(group) // (2 * need)] for k in range(need)]
    resident = tuple(sorted(chosen))
    return SwapPlan(resident, tuple(i for i in range(len(sizes)) if i not in resident), tuple(sizes))


class BlockSwap:
    """Attach block swapping to a SandwichDiT (see module docstring). `remove()` takes it off."""

    def __init__(self, model: nn.Module, blocks_on_device: int, device: str | torch.device,
                 pin_memory: bool = False, prefetch: bool = True, layers: nn.ModuleList | None = None) -> None:
        self.model, self.device = model, torch.device(device)
        self.layers: nn.ModuleList = model.block.layers if layers is None else layers
        self.plan = plan_block_swap(self.layers, blocks_on_device)
        self.cuda = self.device.type == "cuda"
        self.prefetch = prefetch
        self.stream = torch.cuda.Stream(self.device) if self.cuda else None
        self.slot: int | None = None  # swapped block currently on (or travelling to) the device
        self.event = None
        self.resident_now = len(self.plan.resident)
        self.max_resident = self.resident_now
        self.swap_ins = 0
        in_blocks = {id(m) for layer in self.layers for m in layer.modules()}
        for module in model.modules():
            if id(module) not in in_blocks:
                for table, is_param in ((module._parameters, True), (module._buffers, False)):
                    for name, t in table.items():
                        if t is not None:
                            _set(module, name, is_param, t.detach().to(self.device))
        for i in self.plan.resident:
            self.layers[i].to(self.device)
        pin = pin_memory and self.cuda
        self.host = {i: self._host_copies(self.layers[i], pin) for i in self.plan.swapped}
        swapped = set(self.plan.swapped)
        self._next = {i: next((j for j in self.plan.swapped if j > i), None) for i in range(len(self.layers))}
        self.handles = [model.register_forward_pre_hook(self._model_pre),
                        model.register_forward_hook(self._model_post)]
        for i, layer in enumerate(self.layers):
            self.handles.append(layer.register_forward_pre_hook(self._make_pre(i)))
            if i in swapped:
                self.handles.append(layer.register_forward_hook(self._make_post(i)))
        self.last_summary = ""
        self._runs = 0

    # -- placement -------------------------------------------------------------------------
    @staticmethod
    def _host_copies(layer: nn.Module, pin: bool) -> list[tuple[nn.Module, str, bool, torch.Tensor]]:
        out = []
        for module in layer.modules():
            for table, is_param in ((module._parameters, True), (module._buffers, False)):
                for name, t in table.items():
                    if t is None:
                        continue
                    cpu = t.detach().to("cpu")
                    cpu = cpu.pin_memory() if pin else cpu
                    out.append((module, name, is_param, cpu))
                    _set(module, name, is_param, cpu)
        return out

    def _load(self, i: int) -> None:
        if self.slot is not None:
            self._evict(self.slot)
        if self.cuda and self.prefetch:
            with torch.cuda.stream(self.stream):
                for module, name, is_param, cpu in self.host[i]:
                    _set(module, name, is_param, cpu.to(self.device, non_blocking=True))
                self.event = self.stream.record_event()
        else:
            for module, name, is_param, cpu in self.host[i]:
                _set(module, name, is_param, cpu.to(self.device))
            self.event = None
        self.slot = i
        self.swap_ins += 1
        self.resident_now = len(self.plan.resident) + 1
        self.max_resident = max(self.max_resident, self.resident_now)

    def _wait(self, i: int) -> None:
        if self.event is None:
            return
        current = torch.cuda.current_stream(self.device)
        current.wait_event(self.event)
        for module, name, is_param, _ in self.host[i]:
            t = module._parameters[name] if is_param else module._buffers[name]
            t.record_stream(current)  # allocated on the side stream, used on this one
        self.event = None

    def _evict(self, i: int) -> None:
        for module, name, is_param, cpu in self.host[i]:
            _set(module, name, is_param, cpu)  # drops the device copy; the CPU master stays
        self.slot, self.event = None, None
        self.resident_now = len(self.plan.resident)

    # -- hooks -------------------------------------------------------------------------------
    def _prefetch(self, j: int | None) -> None:
        if j is not None and self.slot is None and self.prefetch:
            self._load(j)

    def _model_pre(self, module, args) -> None:
        self._prefetch(self.plan.swapped[0] if self.plan.swapped else None)

    def _model_post(self, module, args, output) -> None:
        self._runs += 1
        self.last_summary = self.summary()
        log.log(logging.INFO if self._runs == 1 else logging.DEBUG, self.last_summary)

    def _make_pre(self, i: int):
        def hook(module, args):
            if i in self.host:
                if self.slot != i:
                    self._load(i)
                self._wait(i)
            else:
                self._prefetch(self._next[i])
        return hook

    def _make_post(self, i: int):
        def hook(module, args, output):
            self._evict(i)
            self._prefetch(self._next[i])
        return hook

    # -- reporting / teardown ------------------------------------------------------------------
    def summary(self) -> str:
        p, n = self.plan, len(self.layers)
        return (f"HappyHorse: {len(p.resident)}/{n} blocks on {self.device} ({p.resident_bytes / 1e9:.1f} GB), "
                f"{len(p.swapped)} offloaded ({p.swapped_bytes / 1e9:.1f} GB)")

    def remove(self) -> None:
        """Take the hooks off; swapped blocks stay in CPU memory (move them yourself if needed)."""
        if self.slot is not None:
            if self.event is not None:
                torch.cuda.current_stream(self.device).wait_event(self.event)
            self._evict(self.slot)
        for h in self.handles:
            h.remove()
        self.handles = []

    def __enter__(self) -> "BlockSwap":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def _set(module: nn.Module, name: str, is_param: bool, t: torch.Tensor) -> None:
    if is_param:
        module._parameters[name].data = t
    else:
        module._buffers[name] = t
