"""Exact speed-ups of opacus's DP-SGD: the same clipping, noise and accounting, less fixed work.

On a small model a DP-SGD step is mostly opacus's fixed per-step work, not arithmetic
(BENCHMARKS.md, privacy). Three pieces of it are done here more cheaply, each computing what
opacus computes (tests/trust/test_privacy.py checks that a run's weights are bit for bit those of
plain opacus):

    FastDPOptimizer    opacus's DPOptimizer (flat clipping, one process) with the clipped sum
                       taken as one matrix-vector product per parameter (opacus: an einsum), the
                       noise drawn without a zero-filled tensor beside it, and the division by the
                       expected batch size counting the accumulated passes once (opacus: once
                       per parameter). The per-sample norms, the clip factor
                       min(1, C / (norm + 1e-6)), the noise's standard deviation (sigma * C), its
                       generator and the order of its draws are opacus's.
    own_grad_samples   a layer's per-sample gradients, once computed by its grad sampler, are kept
                       as they are: opacus copies each into a fresh zero-filled tensor first (for
                       a 64 -> 128 layer at batch 64, 2 MB written twice a step). A ragged batch
                       (RNN time steps of packed sequences) still goes through opacus's copy, and
                       a second pass over the same layer adds out of place, so nothing is ever
                       written into the grad sampler's result.
    memo_rdp           the RDP of the sampled Gaussian mechanism at one order is a pure function
                       of (sample rate, noise multiplier, order); it is memoised. The noise search
                       evaluates it twice per candidate (the PRV accountant's domain bound asks
                       for the whole run and for one step) and every epoch's epsilon again for
                       the same noise: those become look-ups. `install()` empties the memo, so
                       each run pays for its own search (a benchmark's repeats included).

`install()` puts the last two in place (module attributes of opacus; once per process) and starts
the memo afresh; `speed_up` swaps a made-private optimizer's class when it is a plain DPOptimizer.
"""

from __future__ import annotations

import functools

import torch

_INSTALLED = False


def install() -> None:
    """Put own_grad_samples and the memoised RDP into opacus (once per process); empty the memo."""
    global _INSTALLED
    import opacus.grad_sample.grad_sample_module as gsm
    from opacus.accountants.analysis import rdp
    from opacus.accountants.analysis.prv import prvs

    if not _INSTALLED:
        rdp._compute_rdp = prvs._compute_rdp = functools.lru_cache(maxsize=65536)(rdp._compute_rdp)
        gsm.create_or_accumulate_grad_sample = own_grad_samples(gsm.create_or_accumulate_grad_sample)
        _INSTALLED = True
    rdp._compute_rdp.cache_clear()


def own_grad_samples(opacus_version):
    """opacus's create_or_accumulate_grad_sample, without the copy into zeros for a full batch."""

    def create_or_accumulate_grad_sample(*, param: torch.Tensor, grad_sample: torch.Tensor, max_batch_len: int) -> None:
        if not param.requires_grad:
            return
        if grad_sample.shape[0] != max_batch_len:  # padded into a max_batch_len tensor: opacus's way
            opacus_version(param=param, grad_sample=grad_sample, max_batch_len=max_batch_len)
            return
        current = getattr(param, "_current_grad_sample", None)
        param._current_grad_sample = grad_sample if current is None else current + grad_sample

    create_or_accumulate_grad_sample.opacus_version = opacus_version  # what it replaces (the tests compare the two)
    return create_or_accumulate_grad_sample


def speed_up(optimizer):
    """The made-private optimizer as a FastDPOptimizer when it is opacus's plain DPOptimizer (flat
    clipping, one process); any other kind is returned as it is."""
    from opacus.optimizers import DPOptimizer

    if type(optimizer) is DPOptimizer:
        optimizer.__class__ = fast_optimizer_class()
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
            samples = [self._get_flat_grad_sample(p) for p in params]
            n = len(samples[0])
            if n == 0:  # an empty Poisson batch: opacus's own handling
                super().clip_and_accumulate()
                return
            flat = [g.reshape(n, -1) for g in samples]
            norms = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(f, dim=-1).to(flat[0].device) for f in flat], dim=1), dim=1)
            factor = (self.max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
            for p, f in zip(params, flat):
                _check_processed_flag(p.grad_sample)
                grad = (factor.to(f.device, p.dtype) @ f.to(p.dtype)).view_as(p)  # sum_i factor_i * g_i
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
