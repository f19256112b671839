"""Train several seeds of one architecture in one vectorised pass (``torch.func``): the second step
strategy of the trainer (``training.run_epochs``), beside the per-seed loop (``training.SeedLoop``).

The per-seed loop runs one model at a time.  Here the parameters of all seeds
are stacked (``stack_module_state``) and one ``vmap``-ed ``functional_call`` computes every seed's
loss for its own batch, so each layer runs once for all seeds (on a GPU: a few large kernels
instead of many small ones).  The protocol is the loop's, seed by seed:

- each seed keeps its own ``torch.Generator``: it draws its own shuffle at the start of every
  epoch and its own DSA family and per-sample parameters for every batch, in the same order as
  ``training.train``, so a seed sees exactly the batches the loop would show it and its result
  does not depend on the other seeds;
- SGD (momentum, weight decay, step decay) is element-wise, so one optimiser over the stacked
  tensors updates every seed as its own optimiser would.

Results agree with the loop within float tolerance, not bitwise: batched convolutions sum in a
different order.  Models with buffers (batch-norm running statistics, updated in place) or with
random layers (dropout) are not vectorised; ``choose_trainer`` sends them to the loop.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from elf_pipeline.engine.augment import DSAConfig, dsa
from elf_pipeline.engine.evaluation import inference_chunk
from elf_pipeline.engine.precision import autocast
from elf_pipeline.engine.training import TrainConfig, batch_slices, epoch_order, run_epochs, sgd
from elf_pipeline.infra.errors import InputError

log = logging.getLogger(__name__)

VECTORIZE_SETTINGS = ("auto", "true", "false")
TRAINERS = ("vectorized", "loop")


def vectorize_setting(value: object, key: str = "vectorize_seeds") -> str:
    """Normalise an ``auto``/``true``/``false`` setting (``vectorize_seeds``, ``cuda_graphs``; a
    boolean counts as true/false)."""
    text = str(value).lower() if not isinstance(value, bool) else ("true" if value else "false")
    if text not in VECTORIZE_SETTINGS:
        raise InputError(f"{key} must be one of {', '.join(VECTORIZE_SETTINGS)}, got {value!r}")
    return text


def vectorization_blocker(*modules: nn.Module) -> str | None:
    """Why these modules cannot be trained under ``vmap`` (``None`` when they can)."""
    for module in modules:
        for name, sub in module.named_modules():
            if isinstance(sub, nn.modules.batchnorm._NormBase) and sub.track_running_stats:
                return f"{name or type(module).__name__}: batch norm updates running statistics in place"
            if isinstance(sub, nn.modules.dropout._DropoutNd):
                return f"{name}: dropout draws from the global RNG, not the seed's generator"
        if next(module.buffers(), None) is not None:
            return f"{type(module).__name__} has buffers"
    return None


def choose_trainer(setting: str, modules: Sequence[nn.Module], device: torch.device, num_seeds: int) -> tuple[str, str]:
    """(``vectorized`` | ``loop``, why) for a ``vectorize_seeds`` setting.

    ``true`` vectorises wherever the model allows it; ``auto`` only on CUDA, where one kernel per
    layer for all seeds beats one per seed.  On a CPU the convolutions of a single seed already
    keep the cores busy and ``vmap``'s grouped convolutions are slower (measured by ``bench``).
    """
    setting = vectorize_setting(setting)
    if setting == "false":
        return "loop", "vectorize_seeds is false"
    if num_seeds < 2:
        return "loop", "a single seed"
    blocker = vectorization_blocker(*modules)
    if blocker is not None:
        return "loop", f"not vectorisable ({blocker})"
    if setting == "auto" and device.type != "cuda":
        return "loop", f"vectorize_seeds is auto and the device is {device.type} (vectorising is faster on CUDA only)"
    return "vectorized", f"vectorize_seeds is {setting}"


# Epochs between host reads of the losses (history, divergence check): a read per epoch would stall
# the GPU after every epoch (one step each for a small synthetic set); reading every SYNC_EPOCHS still
# stops a diverged run early and names its epoch.
SYNC_EPOCHS = 25


class _Job(nn.Module):
    """A model and its loss module as one module, so one ``functional_call`` swaps both."""

    def __init__(self, model: nn.Module, objective: nn.Module):
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return self.objective(self.model, x, y, index)


@dataclass
class VectorizedRun:
    """Per-seed loss histories and how the step ran."""

    histories: list[list[float]]
    compiled: bool = False
    graphed: bool = False  # the step ran as a replayed CUDA graph
    notes: list[str] = field(default_factory=list)


def _autocast(device: torch.device, enabled: bool, cache: bool = True):
    return autocast(device, "bf16" if enabled else "fp32", cache)


def _forward_backward(step, params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, index: torch.Tensor,
                      device: torch.device, amp: bool, cache: bool = True) -> torch.Tensor:
    with _autocast(device, amp, cache):
        losses = step(params, x, y, index)  # [seeds]
    losses.float().sum().backward()  # seeds are independent: d(sum)/d(params[s]) = d(loss[s])/d(params[s])
    return losses


class GraphedStep:
    """One training step (forward, backward, SGD update of every seed) captured as a CUDA graph.

    A small synthetic set trains in a few hundred tiny steps, each a few hundred kernel launches:
    launch and Python overhead, not arithmetic, bound it on a GPU.  Replaying a captured graph
    launches the whole step at once.  What varies between steps stays outside the graph: the
    shuffle, the gather and the DSA draws (the augmentation family is a host-side choice) fill
    static input buffers that the graph reads.  The warm-up steps that capturing needs run on
    the real parameters and are then undone (parameters restored, momentum buffers zeroed, which
    is what SGD's first step starts from), so the protocol is unchanged.  A learning-rate change
    (the step decay) is captured anew, since SGD bakes its lr into the graph.
    """

    WARMUP = 3

    def __init__(self, step, params: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer, x: torch.Tensor,
                 y: torch.Tensor, index: torch.Tensor, amp: bool):
        self.step, self.params, self.optimizer, self.amp = step, params, optimizer, amp
        self.x, self.y, self.index = x.clone(), y.clone(), index.clone()
        saved = {name: value.detach().clone() for name, value in params.items()}
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(self.WARMUP):
                    optimizer.zero_grad(set_to_none=True)
                    _forward_backward(step, params, self.x, self.y, self.index, x.device, amp, cache=False)
                    optimizer.step()
            torch.cuda.current_stream().wait_stream(side)
        finally:  # undo the warm-up steps (also when they failed)
            torch.cuda.synchronize(x.device)
            with torch.no_grad():
                for name, value in params.items():
                    value.copy_(saved[name])
                for state in optimizer.state.values():
                    if state.get("momentum_buffer") is not None:
                        state["momentum_buffer"].zero_()
        self.capture()

    def capture(self) -> None:
        self.graph = torch.cuda.CUDAGraph()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.cuda.graph(self.graph):
            self.losses = _forward_backward(self.step, self.params, self.x, self.y, self.index, self.x.device,
                                            self.amp, cache=False).detach().float()
            self.optimizer.step()

    def __call__(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        self.x.copy_(x)
        self.y.copy_(y)
        self.index.copy_(index)
        self.graph.replay()
        return self.losses


def _capture(step, params: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer, x: torch.Tensor,
             y: torch.Tensor, index: torch.Tensor, amp: bool, run: VectorizedRun) -> GraphedStep | None:
    """The graphed step, or None (with a note in ``run``) when capturing fails: training then goes
    on eagerly from the parameters GraphedStep restored after its warm-up."""
    try:
        graphed = GraphedStep(step, params, optimizer, x, y, index, amp)
    except Exception as err:  # noqa: BLE001 - any capture failure: train eagerly
        note = f"CUDA graph capture failed ({type(err).__name__}: {str(err).splitlines()[0][:200]}); ran eagerly"
        log.warning(note)
        run.notes.append(note)
        optimizer.zero_grad(set_to_none=True)  # gradients of the failed capture
        return None
    run.graphed = True
    return graphed


def graphs_setting(value: object, device: torch.device, compile: bool, n: int, batch_size: int) -> tuple[bool, str]:
    """Whether the vectorised trainer captures its step as a CUDA graph (``auto``: on CUDA, without
    torch.compile, when every batch has the same size), and why."""
    text = vectorize_setting(value, "cuda_graphs")
    if text == "false":
        return False, "cuda_graphs is false"
    if device.type != "cuda":
        return False, f"the device is {device.type}"
    if compile:
        return False, "torch.compile manages its own graphs"
    if n > batch_size and n % batch_size:
        return False, f"{n} images do not split into equal batches of {batch_size}"
    return True, f"cuda_graphs is {text}"


class VectorizedSeeds:
    """Every seed's model in one step (forward, backward, SGD update of the stacked parameters):
    replayed as a CUDA graph, compiled or eager, falling back to eager (with a note in ``run``) where
    graphs or compiling fail. Each seed shuffles with its own generator at the start of an epoch and
    draws its own augmentation for every batch, in the order the per-seed loop draws them."""

    names_seeds = True

    def __init__(self, template: nn.Module, params: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
                 images: torch.Tensor, labels: torch.Tensor, generators: Sequence[torch.Generator], batch_size: int,
                 augmentation: DSAConfig | None, amp: bool, compile: bool, use_graphs: bool, run: VectorizedRun):
        def seed_loss(seed_params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                      index: torch.Tensor) -> torch.Tensor:
            return functional_call(template, seed_params, (x, y, index))

        self.eager = self.forward = vmap(seed_loss)
        if compile:
            self.forward, run.compiled = torch.compile(self.eager), True
        self.params, self.optimizer, self.amp, self.use_graphs, self.run = params, optimizer, amp, use_graphs, run
        self.images, self.labels, self.generators = images, labels, generators
        self.batch_size, self.augmentation = batch_size, augmentation
        self.seeds, self.device, self.sync_epochs = len(generators), images.device, SYNC_EPOCHS
        self.graphed: GraphedStep | None = None

    def batches(self):
        """One epoch of every seed's batches, ``(x [seeds, batch, ...], y, index)``."""
        orders = torch.stack([epoch_order(len(self.labels), generator) for generator in self.generators])
        if self.device.type == "cuda":  # one asynchronous copy per epoch instead of a blocking one per batch
            orders = orders.pin_memory()
        orders = orders.to(self.device, non_blocking=True)
        for part in batch_slices(len(self.labels), self.batch_size):
            index = orders[:, part]
            x = self.images[index]  # [seeds, batch, C, H, W]
            if self.augmentation is not None:
                x = torch.stack([dsa(x[s], self.augmentation, generator) for s, generator in enumerate(self.generators)])
            yield x, self.labels[index], index

    def lr_changed(self) -> None:
        if self.graphed is not None:
            self.graphed.capture()  # SGD bakes the lr into the graph

    def step(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """The seeds' losses of this batch ([seeds], float, detached) after the update."""
        if self.use_graphs and self.graphed is None:
            self.graphed = _capture(self.forward, self.params, self.optimizer, x, y, index, self.amp, self.run)
            self.use_graphs = self.graphed is not None
        if self.graphed is not None:
            return self.graphed(x, y, index)
        self.optimizer.zero_grad(set_to_none=True)
        try:
            losses = _forward_backward(self.forward, self.params, x, y, index, x.device, self.amp)
        except Exception as err:  # noqa: BLE001 - any compiler failure: run eagerly instead
            if self.forward is self.eager:
                raise
            note = f"torch.compile failed ({type(err).__name__}: {str(err).splitlines()[0][:200]}); ran eagerly"
            log.warning(note)
            self.run.notes.append(note)
            self.forward, self.run.compiled = self.eager, False
            self.optimizer.zero_grad(set_to_none=True)
            losses = _forward_backward(self.forward, self.params, x, y, index, x.device, self.amp)
        self.optimizer.step()
        return losses.detach().float()


def train_vectorized(models: Sequence[nn.Module], objectives: Sequence[nn.Module], images: torch.Tensor,
                     labels: torch.Tensor, config: TrainConfig, generators: Sequence[torch.Generator],
                     desc: str = "train", amp: bool = False, compile: bool = False,
                     cuda_graphs: str | bool = "auto") -> VectorizedRun:
    """Train ``models[s]`` with loss module ``objectives[s]`` and generator ``generators[s]``, all
    seeds at once; the trained parameters are written back into ``models``/``objectives``.

    ``objectives[s](model, x, y, index)`` is the per-seed loss (``elf.ElfLoss``); the modules
    of all seeds must share one structure, and attributes that are not parameters (the teacher
    features) are taken from ``objectives[0]``.  ``images``/``labels`` should already be on the
    models' device.  ``amp`` runs the step under bfloat16 autocast; ``compile`` wraps it in
    ``torch.compile`` (falling back to eager, with a note, if compilation fails); ``cuda_graphs``
    replays the step as a CUDA graph (``GraphedStep``; falling back to eager, with a note, if
    capturing fails).
    """
    if not (len(models) == len(objectives) == len(generators)) or not models:
        raise InputError("train_vectorized needs one objective and one generator per model")
    blocker = vectorization_blocker(*models, *objectives)
    if blocker is not None:
        raise InputError(f"cannot vectorise: {blocker}")
    jobs = [_Job(model, objective) for model, objective in zip(models, objectives, strict=True)]
    for job in jobs:
        job.train()
    device = images.device
    params, _ = stack_module_state(list(jobs))  # leaf tensors [seeds, ...] that require grad
    optimizer = sgd(list(params.values()), config)
    run = VectorizedRun(histories=[[] for _ in models])
    use_graphs, why = graphs_setting(cuda_graphs, device, compile, len(labels), config.batch_size)
    if device.type == "cuda":
        log.info("%s: CUDA graphs %s (%s)", desc, "on" if use_graphs else "off", why)
    seeds = VectorizedSeeds(jobs[0], params, optimizer, images, labels, generators, config.batch_size, config.dsa, amp,
                            compile, use_graphs, run)
    run_epochs(seeds, config, desc, histories=run.histories)
    with torch.no_grad():
        for s, job in enumerate(jobs):
            for name, parameter in job.named_parameters():
                parameter.copy_(params[name][s])
    return run


@torch.inference_mode()
def evaluate_vectorized(models: Sequence[nn.Module], images: torch.Tensor, labels: torch.Tensor,
                        batch_size: int = 1024, amp: bool = False) -> list[float]:
    """Top-1 accuracy of every model on the same test set, all seeds in one ``vmap`` per batch.

    Only for models without buffers (``vectorization_blocker``): eval mode then equals train mode.
    """
    blocker = vectorization_blocker(*models)
    if blocker is not None:
        raise InputError(f"cannot vectorise: {blocker}")
    template = models[0]
    device = next(template.parameters()).device
    was_training = [model.training for model in models]
    for model in models:
        model.eval()
    params = {name: torch.stack([dict(model.named_parameters())[name].detach() for model in models])
              for name, _ in template.named_parameters()}
    forward = vmap(lambda p, x: functional_call(template, p, (x,)), in_dims=(0, None))
    correct = torch.zeros(len(models), dtype=torch.long, device=device)
    if len(labels):  # on a CPU, chunks whose activations (of all seeds together) stay in the caches
        batch_size = max(1, inference_chunk(template, images[:1].to(device), batch_size * len(models)) // len(models))
    for start in range(0, len(labels), batch_size):
        x = images[start:start + batch_size].to(device, non_blocking=True)
        y = labels[start:start + batch_size].to(device, non_blocking=True)
        with _autocast(device, amp):
            logits = forward(params, x)  # [seeds, batch, classes]
        correct += (logits.argmax(dim=2) == y).sum(dim=1)
    for model, training in zip(models, was_training, strict=True):
        model.train(training)
    return [value / len(labels) for value in correct.tolist()]
