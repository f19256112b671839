"""The training step's loss function, run eagerly or through ``torch.compile`` at a precision."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import nn

from elf_pipeline.engine.precision import autocast

log = logging.getLogger(__name__)

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class CompiledLoss:
    """A loss function run eagerly or through ``torch.compile`` (with inductor's on-disk cache, a
    graph compiled by one job is reused by the next seed or job of the same shapes). A compiler
    failure, in the forward or the backward pass, is noted and the step reruns eagerly."""

    def __init__(self, loss_fn: LossFn, compile: bool, notes: list[str]):
        self.eager, self.notes = loss_fn, notes
        self.loss_fn = torch.compile(loss_fn) if compile else loss_fn

    @property
    def compiled(self) -> bool:
        return self.loss_fn is not self.eager

    def forward_backward(self, optimizer: torch.optim.Optimizer, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                         index: torch.Tensor | None, precision: str) -> torch.Tensor:
        """The batch's float32 loss, its gradients accumulated (the caller zeroed them)."""
        try:
            with autocast(x.device, precision):
                loss = self.loss_fn(model, x, y, index)
            loss.backward()
        except Exception as err:  # noqa: BLE001 - any compiler failure: run eagerly instead
            if not self.compiled:
                raise
            note = f"torch.compile failed ({type(err).__name__}: {str(err).strip().splitlines()[0][:200]}); ran eagerly"
            log.warning(note)
            self.notes.append(note)
            self.loss_fn = self.eager
            optimizer.zero_grad(set_to_none=True)
            return self.forward_backward(optimizer, model, x, y, index, precision)
        return loss
