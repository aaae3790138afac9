"""Speed-ups of opacus's DP-SGD: the same clipping, noise and accounting, less work per step.

On a small model a DP-SGD step is mostly opacus's fixed per-step work and passes over per-sample
gradients, not the model's arithmetic (BENCHMARKS.md, privacy). Four pieces are done here more
cheaply, each computing what opacus computes (tests/trust/test_privacy.py trains an MLP and a
DPLSTM both ways and compares the weights):

    FastDPOptimizer    opacus's DPOptimizer (flat clipping, one process) with the clipped sum
                       taken as one matrix-vector product per parameter (opacus: an einsum), the
                       noise drawn without a zero-filled tensor beside it, and the division by the
                       expected batch size counting the accumulated passes once (opacus: once
                       per parameter). The clip factor min(1, C / (|g_n| + 1e-6)) over all
                       parameters, the noise's standard deviation (sigma * C), its generator and
                       the order of its draws are opacus's.
    factored_linear    an nn.Linear on rows (2-d input): sample n's weight gradient is the outer
                       product b_n a_n^T of its backprop and its input, so its norm is
                       |b_n| |a_n| and the clipped sum is (factor * B)^T A, one small matrix
                       product; the (N, out, in) per-sample tensor opacus writes, reads for the
                       norms and reads again for the sum is never made. The same numbers summed
                       in another order: weights agree with opacus's to float rounding (about
                       1e-7 relative), not bit for bit. Only on the hooks of a run whose
                       optimizer is a FastDPOptimizer (`speed_up`); a sequence's (N, T, F) input,
                       a layer met twice in one pass and a padded batch take opacus's way.
    own_grad_samples   a layer's per-sample gradients, once computed by its grad sampler, are kept
                       as they are: opacus copies each into a fresh zero-filled tensor first (for
                       a 64 -> 128 layer at batch 64, 2 MB written twice a step, and the page
                       faults of a fresh allocation). A ragged batch (the later time steps of
                       packed sequences) still goes through opacus's padded copy, and a second
                       pass over the same layer adds out of place, so nothing is written into a
                       grad sampler's result.
    memo_rdp           the RDP of the sampled Gaussian mechanism at one order is a pure function
                       of (sample rate, noise multiplier, order); it is memoised. The noise search
                       evaluates it twice per candidate (the PRV accountant's domain bound asks
                       for the whole run and for one step) and every epoch's epsilon again for
                       the same noise: those become look-ups. `install()` empties the memo, so
                       each run pays for its own search (a benchmark's repeats included).

The accountant's numpy work runs on one BLAS thread (`one_blas_thread`): OpenBLAS's other
threads, once woken, spin for a while after each call, and on a machine with few cores that spin
took the training's core: DP-SGD epochs after an epoch-end epsilon ran up to twice as slow while
another job shared the machine.

`install()` puts the last two in place (module attributes of opacus; once per process) and starts
the memo afresh; `speed_up` swaps a made-private optimizer's class when it is a plain DPOptimizer
and gives that run's hooks the factored Linear.
"""

from __future__ import annotations

import contextlib
import functools

import torch

_INSTALLED = False


def install() -> None:
    """Put own_grad_samples and the memoised RDP into opacus (once per process); empty the memo."""
    global _INSTALLED
    # Each piece only where opacus has the internal it replaces (1.5-1.6 do); another version keeps
    # its own (slower) way for that piece, with the same guarantee.
    if not _INSTALLED:
        try:
            import opacus.grad_sample.grad_sample_module as gsm

            gsm.create_or_accumulate_grad_sample = own_grad_samples(gsm.create_or_accumulate_grad_sample)
        except (ImportError, AttributeError):
            pass
        try:
            from opacus.accountants.analysis import rdp
            from opacus.accountants.analysis.prv import prvs

            rdp._compute_rdp = prvs._compute_rdp = functools.lru_cache(maxsize=65536)(rdp._compute_rdp)
        except (ImportError, AttributeError):
            pass
        _INSTALLED = True
    memo = _memoised_rdp()
    if memo is not None:
        memo.cache_clear()


def _memoised_rdp():
    """opacus's RDP function when install() memoised it, else None."""
    try:
        from opacus.accountants.analysis import rdp
    except ImportError:
        return None
    return rdp._compute_rdp if hasattr(rdp._compute_rdp, "cache_clear") else None


def keeps_grad_samples() -> bool:
    """Whether opacus's grad-sample storage is own_grad_samples (which knows factored gradients)."""
    try:
        import opacus.grad_sample.grad_sample_module as gsm
    except ImportError:
        return False
    return hasattr(gsm.create_or_accumulate_grad_sample, "opacus_version")


def one_blas_thread():
    """A context in which numpy's BLAS uses one thread (threadpoolctl, which scikit-learn brings)."""
    controller = blas_controller()
    return contextlib.nullcontext() if controller is None else controller.limit(limits=1, user_api="blas")


@functools.cache
def blas_controller():
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # no threadpoolctl: BLAS keeps its threads
        return None
    return ThreadpoolController()


def own_grad_samples(opacus_version):
    """opacus's create_or_accumulate_grad_sample, without the copy into zeros for a full batch: a
    full batch's per-sample gradients are kept as computed (a factored Linear's as its stand-in)
    and a second full batch is added out of place; a ragged one (a packed sequence's later time
    steps) goes through opacus's padded, in-place way, on a copy when what it would add into is a
    kept tensor, so nothing is ever written into a grad sampler's result."""

    def create_or_accumulate_grad_sample(*, param: torch.Tensor, grad_sample: torch.Tensor, max_batch_len: int) -> None:
        if not param.requires_grad:
            return
        current = getattr(param, "_current_grad_sample", None)
        if grad_sample.shape[0] == max_batch_len:
            kept = current is None
            param._current_grad_sample = grad_sample if kept else whole(current) + whole(grad_sample)
            param._grad_sample_kept = kept
            return
        if current is not None and getattr(param, "_grad_sample_kept", False):
            param._current_grad_sample = whole(current) if hasattr(current, "_factors") else current.clone()
        param._grad_sample_kept = False
        opacus_version(param=param, grad_sample=whole(grad_sample), max_batch_len=max_batch_len)

    create_or_accumulate_grad_sample.opacus_version = opacus_version  # what it replaces (the tests compare the two)
    return create_or_accumulate_grad_sample


def factored_linear(layer: torch.nn.Linear, activations: list, backprops: torch.Tensor) -> dict:
    """Per-sample gradients of an nn.Linear. On rows (2-d input) sample n's weight gradient is the
    outer product b_n a_n^T; it is handed on as those two factors (a stand-in of the gradient's
    shape that holds no memory, the factors attached), never written out: FastDPOptimizer takes
    its norm as |b_n| |a_n| and the clipped sum as (factor * B)^T A. Anything else (a sequence's
    (N, T, F) input): opacus's grad sampler."""
    from opacus.grad_sample.linear import compute_linear_grad_sample

    a = activations[0]
    if a.dim() != 2 or not layer.weight.requires_grad:
        return compute_linear_grad_sample(layer, activations, backprops)
    a = a.to(backprops.dtype)
    stand_in = backprops.new_empty(()).expand(a.shape[0], *layer.weight.shape)
    stand_in._factors = (backprops, a)
    out = {layer.weight: stand_in}
    if layer.bias is not None and layer.bias.requires_grad:
        out[layer.bias] = backprops  # opacus's einsum("n...k->nk") of a 2-d backprop: the backprop itself
    return out


def whole(grad_sample: torch.Tensor) -> torch.Tensor:
    """A per-sample gradient as a tensor: a factored one multiplied out (opacus's einsum), else itself."""
    factors = getattr(grad_sample, "_factors", None)
    return grad_sample if factors is None else torch.einsum("n...i,n...j->nij", *factors)


def speed_up(optimizer, hooks=None):
    """The made-private optimizer as a FastDPOptimizer when it is opacus's plain DPOptimizer (flat
    clipping, one process), and then `hooks` (opacus's GradSampleHooks on the model) hand its
    nn.Linear layers' gradients on factored (factored_linear; for these hooks only, opacus's table
    of grad samplers is left as it is). Any other kind of optimizer is returned as it is."""
    from opacus.optimizers import DPOptimizer
    from torch import nn

    if type(optimizer) is DPOptimizer:
        try:
            optimizer.__class__ = fast_optimizer_class()
        except (ImportError, AttributeError):  # another opacus without the internals it builds on: opacus's own step
            return optimizer
        if hooks is not None and keeps_grad_samples():  # opacus's own storage would copy the stand-in's empty memory
            hooks.GRAD_SAMPLERS = {**type(hooks).GRAD_SAMPLERS, nn.Linear: factored_linear}
    return optimizer


@functools.cache
def fast_optimizer_class():
    from opacus.optimizers import DPOptimizer
    from opacus.optimizers.optimizer import (
        _check_processed_flag,
        _generate_noise,
        _mark_as_processed,
    )

    class FastDPOptimizer(DPOptimizer):
        """DPOptimizer with its clipping, noise and scaling done in fewer operations (module docstring)."""

        def pre_step(self, closure=None) -> bool:
            """opacus's sequence (clip and accumulate; unless the step is skipped: noise, scale, the
            accountant's hook), without gathering every per-sample gradient twice to learn whether
            there are parameters at all."""
            if not self.params:  # no trainable parameters: a plain optimizer step
                return True
            self.clip_and_accumulate()
            if self._check_skip_next_step():
                self._is_last_step_skipped = True
                return False
            self.add_noise()
            self.scale_grad()
            if self.step_hook:
                self.step_hook(self)
            self._is_last_step_skipped = False
            return True

        def clip_and_accumulate(self) -> None:
            params = self.params
            for p in params:  # several passes' gradients (a list): each made whole, opacus concatenates them
                if isinstance(getattr(p, "grad_sample", None), list):
                    p.grad_sample = [whole(g) for g in p.grad_sample]
            samples = [self._get_flat_grad_sample(p) for p in params]
            n = len(samples[0])
            if n == 0:  # an empty Poisson batch: opacus's own handling
                samples = [whole(g) for g in samples]
                for p, g in zip(params, samples):
                    p.grad_sample = g
                super().clip_and_accumulate()
                return
            factors = [getattr(g, "_factors", None) for g in samples]
            flat = [g.reshape(n, -1) if f is None else None for g, f in zip(samples, factors)]
            device = samples[0].device
            norms = torch.linalg.vector_norm(torch.stack([sample_norms(g, f).to(device) for g, f in zip(flat, factors)], dim=1), dim=1)
            factor = (self.max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
            for p, g, f in zip(params, flat, factors):
                _check_processed_flag(p.grad_sample)
                if f is None:
                    grad = (factor.to(g.device, p.dtype) @ g.to(p.dtype)).view_as(p)  # sum_i factor_i * g_i
                else:  # sum_i factor_i * b_i a_i^T
                    b, a = f
                    grad = ((factor.to(b.device, p.dtype)[:, None] * b.to(p.dtype)).T @ a.to(p.dtype)).view_as(p)
                p.summed_grad = grad if p.summed_grad is None else p.summed_grad + grad
                _mark_as_processed(p.grad_sample)

        def add_noise(self) -> None:
            std = self.noise_multiplier * self.max_grad_norm
            for p in self.params:
                _check_processed_flag(p.summed_grad)
                summed = p.summed_grad
                if self.secure_mode or std == 0:
                    noise = _generate_noise(std=std, reference=summed, generator=self.generator, secure_mode=self.secure_mode)
                else:  # opacus's draw, less the zeros it allocates beside it
                    noise = torch.normal(mean=0, std=std, size=summed.shape, device=summed.device, generator=self.generator,
                                         dtype=summed.dtype)
                p.grad = (summed + noise).view_as(p)
                _mark_as_processed(p.summed_grad)

        def scale_grad(self) -> None:
            if self.loss_reduction == "mean":
                scale = self.expected_batch_size * self.accumulated_iterations
                for p in self.params:
                    p.grad /= scale

    return FastDPOptimizer


def sample_norms(flat: torch.Tensor, factors) -> torch.Tensor:
    """Each sample's gradient norm for one parameter: of its rows, or |b_n| |a_n| for a factored one."""
    if factors is None:
        return torch.linalg.vector_norm(flat, dim=-1)
    b, a = factors
    return torch.linalg.vector_norm(b, dim=-1) * torch.linalg.vector_norm(a, dim=-1)
