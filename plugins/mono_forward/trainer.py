"""The ``mono_forward`` trainer (see the package docstring for the method and its equations)."""

from __future__ import annotations

import math
import time
from typing import ClassVar, Literal, Union

import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveInt
from torch import Tensor
from untied_plugins.backprop.losses import SampleStream
from untied_plugins.mono_forward.estimators import (
    DDConfig,
    ad_gradient,
    apply,
    dd_chunks,
    dd_estimate,
)
from untied_plugins.mono_forward.readout import Readout, predict

from bench_core.interfaces import (
    TrainingSession,
    constraint_hooks,
    execution_option,
    revised_option,
)
from bench_core.layered import as_blocks

MEAN_KEY = "direction_cosine"


class MonoForwardParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # the conformance kit (untied check-plugin): a layered model (its own kit model has no blocks)
    # and no wall-clock metric, which no seed can make reproducible
    conformance_run: ClassVar[dict] = {"model": {"name": "mlp", "hidden": [8]},
                                       "trainer": {"epochs": 2, "record_time": False}}
    estimator: Literal["autograd", "directional"] = Field(
        "autograd", description="local gradients by autograd (MF+AD) or by zeroth-order "
                                "directional derivatives with no autograd (MF+DD)")
    directions: int = Field(4, ge=1, description="P: random directions per chunk and step (DD)")
    eps: float = Field(1e-3, gt=0, description="finite-difference step of the central "
                                               "differences (DD)")
    chunk_size: int | None = Field(1024, ge=1, description="target entries per chunk: whole "
                                   "rows (units, classes), at least one (DD); none = one chunk "
                                   "per matrix")
    schedule: Literal["joint", "greedy"] = Field(
        "joint", description="joint: every block steps on every batch; greedy: block 1 for "
                             "`epochs` epochs, then block 2 on block 1's frozen outputs, ...")
    projection_dim: int | None = Field(
        256, ge=1, description="spatial (conv) blocks: fixed seeded random projection of the "
                               "activations to this size before M_l; none = no projection")
    projection: Literal["channel", "whole"] = Field(
        "channel", description="channel: one projection per channel (projection_dim / C "
                               "values each; the poster's); whole: one projection of the "
                               "flattened map")
    direction_kind: Literal["gaussian", "rademacher"] = revised_option(
        "gaussian", {"rademacher": "2"},
        description="DD directions: normalised Gaussian (the poster's) or random signs / "
                    "sqrt(n) (same mean and covariance, cheaper to draw; revision 2: drawn as "
                    "24-bit integers, two 12-bit table rows each)")
    lr: float = Field(0.01, gt=0, description="SGD learning rate of W_l, b_l and M_l")
    lr_milestones: list[int] = Field(
        default_factory=list, description="epochs after which the rate is multiplied by "
                                          "lr_gamma (a step schedule, as backprop's; under the "
                                          "greedy schedule, epochs of each block's phase); "
                                          "empty: a constant rate")
    lr_gamma: float = Field(0.1, gt=0, description="the factor of each lr_milestones step")
    epochs: int = Field(10, ge=1, description="epochs (per block under the greedy schedule)")
    batch_size: int = Field(64, ge=1)
    loss_reduction: Literal["mean", "sum"] = Field(
        "mean", description="reduce the per-sample local losses of a batch by mean or sum")
    shuffle: bool = True
    epoch_size: int | None = Field(
        None, ge=1, description="samples per epoch (default: the training set); a smaller "
                                "training set is cycled through in consecutive shuffled passes "
                                "(as backprop's epoch_size)")
    # execution options (bench_core.interfaces.execution_option): not part of the run's seed
    eval_batch_size: int = execution_option(2048, ge=1, description="batch size of evaluation")
    direction_diagnostic: Union[bool, PositiveInt] = execution_option(
        False, description="log the cosine between the DD estimate and the autograd gradient "
                           "of each block's local loss (cos/<block>, direction_cosine): true = "
                           "every epoch, k = every k-th epoch")
    record_time: bool = execution_option(
        True, description="report train_seconds, the wall-clock time of the training steps "
                          "(evaluation excluded; not reproducible)")
    fused_losses: bool = execution_option(
        False, description="DD on the CPU: evaluate the perturbed losses of chunks that are one "
                           "dense unit in one compiled kernel (torch.compile; the eager form "
                           "where compiling fails): the same estimator, its per-sample sums "
                           "added in another order (last-bit differences), faster")
    slab_budget: int = Field(1 << 24, ge=1, description="DD: most direction entries and "
                             "perturbed activations held at once (memory bound)")


class MonoForwardTrainer:
    def __init__(self, params: MonoForwardParams) -> None:
        self.p = params
        self.lr = params.lr
        self.dd = DDConfig(params.directions, params.eps, params.chunk_size,
                           params.loss_reduction, params.slab_budget, params.direction_kind,
                           fused=params.fused_losses)

    # ---- one step -----------------------------------------------------------------------
    def step(self, block, readout: Readout, x: Tensor, y: Tensor, gen: torch.Generator
             ) -> tuple[Tensor, Tensor]:
        """Update one block and its ``M_l`` on ``(x, y)``; return its output and local loss."""
        if self.p.estimator == "directional":
            pairs, a, loss = dd_estimate(block, readout, x, y, self.dd, gen)
        else:
            pairs, a, loss = ad_gradient(block, readout, x, y, self.p.loss_reduction)
        apply(pairs, self.lr)
        return a, loss

    def rate(self, epoch: int) -> float:
        """``lr`` times ``lr_gamma`` per milestone passed before ``epoch`` (1-based; under the
        greedy schedule counted within each block's phase)."""
        p = self.p
        within = epoch if p.schedule == "joint" else (epoch - 1) % p.epochs + 1
        return p.lr * p.lr_gamma ** sum(m < within for m in p.lr_milestones)

    def phases(self, n_blocks: int) -> list[list[int]]:
        """The blocks trained in each epoch, in order."""
        if self.p.schedule == "joint":
            return [list(range(n_blocks))] * self.p.epochs
        return [[b] for b in range(n_blocks) for _ in range(self.p.epochs)]

    # ---- training -----------------------------------------------------------------------
    def fit(self, session: TrainingSession) -> dict[str, float]:
        p, ctx, data = self.p, session.ctx, session.data
        if data.info.task != "classification":
            raise ValueError("mono_forward: needs a classification dataset (goodness per class)")
        model = session.build_model()
        blocks = as_blocks(model)
        constrain = constraint_hooks(model)
        directional = p.estimator == "directional"
        if directional:  # no autograd anywhere: nothing of the model may build a graph
            for w in model.parameters():
                w.requires_grad_(False)
        readouts = self._readouts(model, blocks, session)
        gen = ctx.generator("mono_forward.directions")
        n = len(data.x_train)
        stream = SampleStream(n, p.epoch_size or n, p.shuffle, ctx.generator("batches"),
                              ctx.device)
        chunks = [dd_chunks(block, readout, self.dd) for block, readout in zip(blocks, readouts)]
        final: dict[str, float] = {}
        train_seconds = 0.0
        model.train()
        for epoch, active in enumerate(self.phases(len(blocks)), start=1):
            self.lr = self.rate(epoch)
            started = time.perf_counter()
            order = stream.next_epoch()
            loss_sum = torch.zeros(len(blocks), device=ctx.device)
            last = max(active)
            for i in range(0, len(order), p.batch_size):
                idx = order[i:i + p.batch_size]
                x, y = data.x_train[idx], data.y_train[idx]
                with torch.inference_mode() if directional else torch.no_grad():
                    for b, block in enumerate(blocks[:last + 1]):
                        if b in active:
                            x, loss = self.step(block, readouts[b], x, y, gen)
                            loss_sum[b] += loss if p.loss_reduction == "sum" else loss * len(idx)
                        else:
                            x = block.forward(x)
                    for hook in constrain:
                        hook()
                # the clean forward, and every perturbed local loss DD evaluated (2P per chunk)
                perturbed = sum(chunks[b] for b in active) if directional else 0
                ctx.counters.forward(len(idx), passes=1 + 2 * p.directions * perturbed)
                if not directional:
                    ctx.counters.backward(len(idx))
            if ctx.device.type == "cuda":  # kernels run asynchronously: time them, not launches
                torch.cuda.synchronize(ctx.device)
            train_seconds += time.perf_counter() - started
            alive: list = [None] * len(blocks)
            evaluated = self.evaluate(model, blocks, readouts, session, alive)
            diag = {**self._diagnose(model, blocks, readouts, session, epoch),
                    **self._health(blocks, readouts, alive)}
            metrics = {"train_loss": loss_sum[active].sum() / (len(active) * len(order)),
                       **evaluated, **diag}
            values = ctx.log_epoch(epoch, diagnostics=diag.keys(), **metrics)
            final = {k: v for k, v in values.items() if k not in diag}
            if MEAN_KEY in values and math.isfinite(values[MEAN_KEY]):
                final[MEAN_KEY] = values[MEAN_KEY]
        return {**final, **({"train_seconds": train_seconds} if p.record_time else {})}

    def _readouts(self, model, blocks, session: TrainingSession) -> list[Readout]:
        """``M_l`` (and ``R_l``) per block, sized by one probe forward in eval mode."""
        data, ctx = session.data, session.ctx
        gen = ctx.generator("mono_forward.readout")
        model.eval()
        out: list[Readout] = []
        with torch.no_grad():
            x = data.x_train[:2]
            for block in blocks:
                x = block.forward(x)
                proj = self.p.projection_dim if block.spatial else None
                channels = x.shape[1] if block.spatial and self.p.projection == "channel" else 1
                out.append(Readout(data.info.num_outputs, x[0].numel(), proj, gen, ctx.device,
                                   channels))
        model.train()
        return out

    # ---- evaluation ---------------------------------------------------------------------
    def evaluate(self, model, blocks, readouts, session: TrainingSession,
                 alive: list | None = None) -> dict[str, Tensor]:
        """Per evaluation set: ``<set>_accuracy`` (cumulative), ``<set>_accuracy_final``,
        ``<set>_loss`` (NLL of the mean of the blocks' softmax) and ``<set>_loss_final``.
        ``alive`` (one slot per block): filled with which output units (channels) of each block
        are non-zero on some sample of the first evaluation set."""
        out: dict[str, Tensor] = {}
        bs = self.p.eval_batch_size
        model.eval()
        with torch.inference_mode():
            for s, (prefix, (x, y)) in enumerate(session.data.test_sets().items()):
                sums: dict[str, Tensor] = {}
                for i in range(0, len(x), bs):
                    h, goodness = x[i:i + bs], []
                    for b, (block, readout) in enumerate(zip(blocks, readouts)):
                        h = block.forward(h)
                        goodness.append(readout.goodness(h))
                        if alive is not None and s == 0:
                            on = (h.reshape(len(h), h.shape[1], -1) != 0).any(-1).any(0)
                            alive[b] = on if alive[b] is None else alive[b] | on
                    session.ctx.counters.forward(len(h))
                    for k, v in predict(goodness, y[i:i + bs]).items():
                        sums[k] = sums.get(k, 0) + v
                m = max(len(x), 1)
                out.update({f"{prefix}_accuracy": sums["hits"] / m,
                            f"{prefix}_accuracy_final": sums["hits_final"] / m,
                            f"{prefix}_loss": sums["loss"] / m,
                            f"{prefix}_loss_final": sums["loss_final"] / m})
        model.train()
        return {k: v.clone() for k, v in out.items()}

    # ---- block health ------------------------------------------------------------------
    def _health(self, blocks, readouts, alive: list) -> dict[str, Tensor]:
        """Per block: ``weight_norm/<block>`` (Frobenius norm of all the block's parameters),
        ``projection_norm/<block>`` (of ``M_l``) and ``dead_units/<block>``, the share of its
        output units (channels of a spatial block) that are zero on every sample of the first
        evaluation set (``alive``, from :meth:`evaluate`, in eval mode), so a collapse shows in
        the curves. Diagnostics: a non-finite norm is recorded, not taken for divergence (the
        losses say that)."""
        out: dict[str, Tensor] = {}
        with torch.inference_mode():
            for block, readout, on in zip(blocks, readouts, alive):
                params = [w.detach().flatten() for w in block.parameters()]
                out[f"weight_norm/{block.name}"] = torch.linalg.vector_norm(
                    torch.cat(params) if params else readout.M.new_zeros(0))
                out[f"projection_norm/{block.name}"] = torch.linalg.vector_norm(readout.M)
                out[f"dead_units/{block.name}"] = (1 - on.float().mean() if on is not None
                                                   else readout.M.new_full((), math.nan))
        return out

    # ---- direction diagnostic -----------------------------------------------------------
    def _diagnose(self, model, blocks, readouts, session: TrainingSession, epoch: int
                  ) -> dict[str, Tensor]:
        """Per block, the cosine between the DD estimate and the autograd gradient of the same
        local loss on a fixed batch (the first ``batch_size`` training samples); NaN on epochs
        the interval skips. Uses autograd (here only, outside the training step); restores
        buffers (BatchNorm statistics) and every random stream, so training is unchanged."""
        every = int(self.p.direction_diagnostic)
        if not every:
            return {}
        nan = torch.full((), math.nan, device=session.ctx.device)
        names = [f"cos/{block.name}" for block in blocks]
        if epoch % every:
            return {**{k: nan for k in names}, MEAN_KEY: nan}
        ctx, data = session.ctx, session.data
        x, y = data.x_train[:self.p.batch_size], data.y_train[:self.p.batch_size]
        buffers = {k: v.clone() for k, v in model.named_buffers()}
        cosines = []
        with ctx.preserve_random_state():
            gen = ctx.generator("mono_forward.diagnostic")
            for block, readout in zip(blocks, readouts):
                with torch.inference_mode():
                    estimate, _, _ = dd_estimate(block, readout, x, y, self.dd, gen)
                gradient, x, _ = ad_gradient(block, readout, x, y, self.p.loss_reduction)
                a = torch.cat([g.flatten() for _, g in estimate])
                b = torch.cat([g.flatten() for _, g in gradient])
                cosines.append((a @ b) / (a.norm() * b.norm()))
        with torch.no_grad():
            for k, v in model.named_buffers():
                v.copy_(buffers[k])
        cos = torch.stack(cosines)
        return {**dict(zip(names, cosines)),
                MEAN_KEY: torch.nanmean(torch.where(cos.isfinite(), cos, torch.nan))}


def mono_forward(params: MonoForwardParams) -> MonoForwardTrainer:
    """Mono-Forward: every block trained on its own goodness loss, by autograd or by
    directional derivatives (package docstring)."""
    return MonoForwardTrainer(params)
