"""The batched kernel behind the ``online`` trainer's grouped runs (see :mod:`.online`).

K runs share one computation: their weights are stacked on a leading axis, each step gathers
one sample per run, the forward and the backward (by hand: each dense layer and the tied
activation's derivative ``f'``) are batched matrix products, and every run gets its own update in
the rank-one form of :class:`~untied_plugins.dual_weight.online_form.OnlineForm`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from untied_plugins.dual_weight.online_form import online_form_of

from bench_core.errors import Diverged
from bench_core.grouping import global_module_hooks, plain_module, plain_sequence
from bench_core.interfaces import NativeActivation, TrainingSession


class Member:
    """One run of a group: its session, model, rule form and the model's dense layers."""

    def __init__(self, session, model, form, layers, activations) -> None:
        self.session, self.model, self.form = session, model, form
        self.layers: list[nn.Linear] = layers
        self.activations: list[NativeActivation] = activations

    @classmethod
    def prepare(cls, session: TrainingSession) -> "Member | None":
        """Build the run's model and rule; ``None`` if they do not fit the batched kernel."""
        model = session.build_model()
        rule = session.build_rule(model)
        form = online_form_of(rule)
        if form is not None and callable(getattr(rule, "remove_hooks", None)):
            rule.remove_hooks()  # the kernel replaces the rule (online_form module docstring)
        chain = plain_sequence(model)
        if form is None or chain is None or global_module_hooks():
            return None
        layers, activations = [], []
        for i, module in enumerate(chain):
            if plain_module(module, nn.Flatten) and i == 0:
                continue
            if plain_module(module, nn.Linear) and module.bias is not None:
                if len(layers) > len(activations):
                    return None  # two dense layers in a row
                layers.append(module)
            elif plain_module(module, NativeActivation) and len(activations) < len(layers):
                activations.append(module)
            else:
                return None
        if not layers or len(activations) != len(layers) - 1:
            return None  # the kernel takes linear outputs after an activation per hidden layer
        return cls(session, model, form, layers, activations)

    def signature(self) -> tuple:
        shapes = tuple(tuple(m.weight.shape) for m in self.layers)
        acts = tuple(a.activation.name for a in self.activations)
        d = self.session.data
        return (shapes, acts, d.x_train.dtype, tuple(d.x_train.shape[1:]), d.info.task,
                tuple(d.test_sets()))


class GroupedOnline:
    """K runs of the online protocol as one batched computation (module docstring), for the
    :class:`~untied_plugins.dual_weight.online.OnlineTrainer` ``trainer``.

    The runs are ordered gradient-form first (unpenalised, then penalised), dual-weight form
    second, so that each kind is updated on a contiguous slice of the stacked weights: only
    penalised runs pay for a decay pass (and a norm), and only dual-weight runs for their two
    matrices. A dual-weight run keeps ``W1`` and ``W2`` as one ``(2 out, in)`` matrix per layer
    and computes ``W x = W1 x - W2 x`` from it, so that ``W`` is formed only when it is written
    back: at this size a step is bound by memory traffic, and forming ``W`` every step costs a
    third of a dual-weight run's."""

    def __init__(self, trainer, members: list[Member]) -> None:
        self.trainer, self.p = trainer, trainer.p
        self.members = sorted(members, key=lambda m: (m.form.dual, m.form.penalty != 0))
        members = self.members
        first = members[0]
        self.device = first.session.ctx.device
        self.act = [a.activation for a in first.activations]
        dtype = first.layers[0].weight.dtype
        K = len(members)
        self.nd = sum(not m.form.dual for m in members)     # gradient-form runs: [:nd]
        self.n0 = sum(not m.form.dual and m.form.penalty == 0 for m in members)  # of which plain

        def stack(get) -> Tensor:
            return torch.stack([get(m) for m in members]).to(self.device)

        def per_run(value, runs=members) -> Tensor:
            return torch.tensor([float(value(m.form)) for m in runs], device=self.device,
                                dtype=dtype).view(-1, 1)

        n_layers = len(first.layers)
        self.w = [stack(lambda m, l=l: m.layers[l].weight.detach()) for l in range(n_layers)]
        self.b = [stack(lambda m, l=l: m.layers[l].bias.detach()) for l in range(n_layers)]
        self.lr = per_run(lambda f: f.lr)
        self.bias_decay = per_run(lambda f: f.bias_decay)
        forms = [m.form for m in members]            # flags from Python values: no host sync
        self.any_bias_decay = any(f.bias_decay != 0 for f in forms)
        direct, dual = members[:self.nd], members[self.nd:]
        penalised = direct[self.n0:]
        self.decay = per_run(lambda f: f.lr * f.penalty, penalised)
        self.norm_penalty = per_run(lambda f: f.penalty_norm, penalised) > 0
        self.any_norm = any(m.form.penalty_norm for m in penalised)
        if dual:
            self.stable = per_run(lambda f: f.stabilizer_scale is not None, dual) > 0
            self.any_stable = any(m.form.stabilizer_scale is not None for m in dual)
            self.scale = per_run(lambda f: f.stabilizer_scale or 0.0, dual)
            # (Kd, 2 out, in): rows [:out] are W1 (= the initial W), rows [out:] are W2 (= 0)
            self.w12 = [torch.cat([w[self.nd:], torch.zeros_like(w[self.nd:])], 1)
                        for w in self.w]
            self.gavg = [torch.ones(len(dual), w.shape[1], device=self.device, dtype=dtype)
                         for w in self.w]
        # pools of different sizes share one padded tensor; each run draws from its own rows
        # (indices below its pool's size), so the padding is never read and never written:
        # torch.empty, not zeros (zeroing 60 pools of 1000 x 784 floats cost 0.1 s a group)
        sizes = [len(m.session.data.x_train) for m in members]
        self.pool = max(sizes)
        self.x_pool = torch.empty(K * self.pool, first.layers[0].in_features,
                                  device=self.device, dtype=dtype)
        y0 = first.session.data.y_train
        self.y_pool = torch.empty((K * self.pool, *y0.shape[1:]), device=self.device,
                                  dtype=y0.dtype)
        for k, m in enumerate(members):
            at = k * self.pool
            self.x_pool[at:at + sizes[k]] = m.session.data.x_train.reshape(sizes[k], -1)
            self.y_pool[at:at + sizes[k]] = m.session.data.y_train
        offsets = torch.arange(K, device=self.device) * self.pool
        order = torch.stack([trainer._indices(m.session) for m in members])
        self.order = (order + offsets.view(-1, 1)).t().contiguous()   # (T, K) rows of the pool
        self.rows = torch.arange(K, device=self.device)

    # one step for all runs: forward, backward by hand, every run's own update
    def step(self, t: int) -> Tensor:
        idx = self.order[t]
        x = self.x_pool.index_select(0, idx)                       # (K, in)
        y = self.y_pool.index_select(0, idx)
        inputs, pre = [], []
        h = x
        nd = self.nd
        for l, (w, b) in enumerate(zip(self.w, self.b)):
            inputs.append(h)
            if nd == len(self.members):
                z = torch.baddbmm(b.unsqueeze(1), h.unsqueeze(1), w.transpose(1, 2)).squeeze(1)
            else:
                z = torch.empty_like(b)
                torch.baddbmm(b[:nd].unsqueeze(1), h[:nd].unsqueeze(1),
                              w[:nd].transpose(1, 2), out=z[:nd].unsqueeze(1))
                # W1 x | W2 x of the dual-weight runs, one product
                z12 = torch.bmm(h[nd:].unsqueeze(1), self.w12[l].transpose(1, 2)).squeeze(1)
                out = w.shape[1]
                torch.add(b[nd:], z12[:, :out] - z12[:, out:], out=z[nd:])
            pre.append(z)
            h = self.act[l](z) if l < len(self.act) else z
        out = h
        if self.p.loss == "mse":
            diff = out - y.reshape(out.shape).to(out.dtype)
            loss = diff.square().mean(1)
            g = diff * (2.0 / out.shape[1])
        else:
            logp = torch.log_softmax(out, 1)
            loss = -logp.gather(1, y.view(-1, 1)).squeeze(1)
            g = logp.exp()
            g[self.rows, y] -= 1.0
        for l in range(len(self.w) - 1, -1, -1):
            g_below = (self._input_error(l, g)
                       * self.act[l - 1].derivative(pre[l - 1])) if l > 0 else None
            self._update(l, inputs[l], g)
            g = g_below
        return loss

    def _input_error(self, l: int, g: Tensor) -> Tensor:
        """``g W`` per run: the error at layer ``l``'s input (``W = W1 - W2`` for dual runs)."""
        nd = self.nd
        if nd == len(self.members):
            return torch.bmm(g.unsqueeze(1), self.w[l]).squeeze(1)
        out = torch.empty(len(self.members), self.w[l].shape[2], device=g.device, dtype=g.dtype)
        torch.bmm(g[:nd].unsqueeze(1), self.w[l][:nd], out=out[:nd].unsqueeze(1))
        signed = torch.cat([g[nd:], -g[nd:]], 1).unsqueeze(1)             # g W1 - g W2
        torch.bmm(signed, self.w12[l], out=out[nd:].unsqueeze(1))
        return out

    def _update(self, l: int, x: Tensor, g: Tensor) -> None:
        lr, nd, w, b = self.lr, self.nd, self.w[l], self.b[l]
        if self.any_bias_decay:
            b.addcmul_(b, lr * self.bias_decay, value=-1.0)
        b.addcmul_(g, lr, value=-1.0)
        # W - c W + u x^T: subtracting c W (rather than multiplying by a rounded 1 - c) keeps
        # each step's rounding error random instead of a systematic drift of the scale of W
        if nd:
            n0 = self.n0
            if n0 < nd:                                  # the penalised runs' decay
                wp = w[n0:nd]
                decay = self.decay
                if self.any_norm:
                    norm = torch.linalg.vector_norm(wp, dim=(1, 2)).view(-1, 1)
                    inv = torch.where(norm > 0, 1.0 / norm, torch.zeros_like(norm))
                    decay = decay * torch.where(self.norm_penalty, inv, torch.ones_like(inv))
                wp.addcmul_(wp, decay.unsqueeze(2), value=-1.0)
            w[:nd].addcmul_((lr[:nd] * g[:nd]).unsqueeze(2), x[:nd].unsqueeze(1), value=-1.0)
        if nd == len(self.members):
            return
        gd, xd, lrd = g[nd:], x[nd:].unsqueeze(1), lr[nd:]
        mag = gd.abs()
        if self.any_stable:
            rate = lrd * torch.where(self.stable, (self.scale * mag / self.gavg[l]).clamp(max=1.0),
                                     mag)
        else:
            rate = lrd * mag
        rate = rate.clamp_(max=1.0)
        a = torch.cat([torch.where(gd < 0, rate, 0.0), torch.where(gd > 0, rate, 0.0)], 1)
        self.w12[l].lerp_(xd, a.unsqueeze(2))   # W1, W2 <- W (1 - a) + a x, in one pass
        if self.any_stable:
            moved = self.gavg[l] * (1.0 - lrd) + lrd * mag
            self.gavg[l] = torch.where(self.stable & (gd != 0), moved, self.gavg[l])

    def _write_back(self) -> None:
        with torch.no_grad():
            if self.nd < len(self.members):
                for w, w12 in zip(self.w, self.w12):
                    out = w.shape[1]
                    torch.sub(w12[:, :out], w12[:, out:], out=w[self.nd:])   # W = W1 - W2
            for k, m in enumerate(self.members):
                for l, layer in enumerate(m.layers):
                    layer.weight.copy_(self.w[l][k])
                    layer.bias.copy_(self.b[l][k])

    def run(self) -> list[dict[str, float] | BaseException]:
        """Train; one result per run in ``self.members`` order."""
        results: list[dict[str, float] | BaseException] = [{} for _ in self.members]
        start = 0
        with torch.no_grad():
            for stop in self.trainer._checkpoints():
                loss_sum = torch.zeros(len(self.members), device=self.device)
                for t in range(start, stop):
                    loss_sum += self.step(t)
                self._write_back()
                for k, m in enumerate(self.members):
                    m.session.ctx.counters.forward(1, passes=stop - start)
                    m.session.ctx.counters.backward(1, passes=stop - start)
                    if isinstance(results[k], BaseException):
                        continue
                    try:
                        results[k] = self.trainer._evaluate(m.session, m.model, stop,
                                                            loss_sum[k] / (stop - start))
                    except Diverged as exc:
                        results[k] = exc
                start = stop
        return results
