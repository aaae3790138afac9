"""What a run cost: parameters, FLOPs, time, throughput, memory, energy and CO2.

FLOPs are counted once, on a few training rows, never per step: torch's FlopCounterMode runs the
task's loss (the model's forward) and counts every matrix multiply and convolution as 2 x the
multiply-adds (element-wise work such as activations and norms is not counted). Two things it
misses are filled in analytically, for any module of those kinds, whatever model holds them:
recurrent layers (nn.RNN / nn.LSTM / nn.GRU run as one fused op that it counts as zero) and
PyTorch's fused CPU attention kernel (given the formula torch uses for the CUDA kernels).

Energy is codecarbon's offline tracker when it is installed (cost.energy: auto | codecarbon),
otherwise an estimate: CPU watts per busy core x the CPU-seconds this process used, plus GPU board
power x time (utilization taken as 100%, an upper bound). CO2 = energy x a grid carbon intensity
(cost.country from the table below, or cost.grid_g_per_kwh). Every estimate says so in
`energy_method`.
"""

from __future__ import annotations

import logging
import resource
import sys
import time
from typing import Any, Callable, Optional

from damoxing.config import GRID_G_PER_KWH

# (name fragment, peak FLOP/s by matmul precision, board power in W). Dense (no sparsity) peaks
# from the vendors' data sheets; the first fragment found in the device name wins, so more
# specific names come first ("H100 PCIe" before "H100", "A100" before "A10").
DEVICE_SPECS: list[tuple[str, dict[str, Optional[float]], float]] = [
    ("H200", {"bf16": 989e12, "tf32": 494e12, "fp32": 67e12}, 700),
    ("H100 PCIE", {"bf16": 756e12, "tf32": 378e12, "fp32": 51e12}, 350),
    ("H100", {"bf16": 989e12, "tf32": 494e12, "fp32": 67e12}, 700),
    ("A100", {"bf16": 312e12, "tf32": 156e12, "fp32": 19.5e12}, 400),
    ("L40S", {"bf16": 362e12, "tf32": 183e12, "fp32": 91.6e12}, 350),
    ("L4", {"bf16": 121e12, "tf32": 60e12, "fp32": 30.3e12}, 72),
    ("A10", {"bf16": 125e12, "tf32": 62.5e12, "fp32": 31.2e12}, 150),
    ("RTX 4090", {"bf16": 165e12, "tf32": 82.6e12, "fp32": 82.6e12}, 450),
    ("V100", {"bf16": None, "tf32": None, "fp32": 15.7e12}, 300),
    ("T4", {"bf16": None, "tf32": None, "fp32": 8.1e12}, 70),
]
DEFAULT_GPU_WATTS = 300.0
FLOPS_SAMPLE_ROWS = 8  # rows the FLOP count runs on; per-sample FLOPs = count / rows
TOKEN_KINDS = ("text", "corpus")


# --------------------------------------------------------------------------- FLOPs


def recurrent_flops(module, inputs) -> int:
    """Matmul FLOPs of one call of an nn.RNN / nn.LSTM / nn.GRU (2 per multiply-add).

    Per step, layer and direction: gates x hidden x (layer input + recurrent state) multiply-adds,
    plus the LSTM projection (proj_size) if any. `inputs` is (B, T, F), (T, B, F), (T, F) or a
    PackedSequence; the step count is B x T (a PackedSequence's real, unpadded steps).
    """
    from torch.nn.utils.rnn import PackedSequence

    if isinstance(inputs, PackedSequence):
        steps = int(inputs.data.shape[0])
    else:
        steps = int(inputs.shape[0]) if inputs.dim() == 2 else int(inputs.shape[0] * inputs.shape[1])
    gates = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}[module.mode]
    hidden = module.hidden_size
    state = module.proj_size or hidden  # what h_t is: the projected size when proj_size is set
    directions = 2 if module.bidirectional else 1
    per_step = 0
    for layer in range(module.num_layers):
        layer_input = module.input_size if layer == 0 else state * directions
        multiply_adds = gates * hidden * (layer_input + state) + (hidden * state if module.proj_size else 0)
        per_step += 2 * multiply_adds * directions
    return per_step * steps


def _fused_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _extra_flop_formulas() -> dict:
    """Ops FlopCounterMode has no formula for in this torch version, mapped to the right one."""
    import torch

    aten = torch.ops.aten
    extra = {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        extra[aten._scaled_dot_product_flash_attention_for_cpu] = _fused_attention_flops
    return extra


def count_flops(model, run: Callable[[], Any]) -> int:
    """FLOPs of `run()` (which calls `model`): FlopCounterMode's count, with every recurrent
    module's share replaced by `recurrent_flops` (whatever the counter saw inside it)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False, custom_mapping=_extra_flop_formulas())
    correction = [0]
    entered: dict[int, list[int]] = {}

    def before(module, args):
        entered.setdefault(id(module), []).append(counter.get_total_flops())

    def after(module, args, output):
        seen = counter.get_total_flops() - entered[id(module)].pop()
        correction[0] += recurrent_flops(module, args[0]) - seen

    handles = []
    for module in model.modules():
        if isinstance(module, torch.nn.RNNBase):
            handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
    try:
        with counter:
            run()
    finally:
        for handle in handles:
            handle.remove()
    return int(counter.get_total_flops() + correction[0])


def forward_flops_per_sample(model, task, x, y, device=None, rows: int = FLOPS_SAMPLE_ROWS) -> float:
    """Forward FLOPs per sample of one training step (the task's loss on `rows` rows of x, y,
    moved to `device`, where the model is).

    Runs in eval mode (batch norm reads its running statistics, so the model is not changed),
    without gradients, with PyTorch's fused transformer fast path switched off for the count (it
    hides its matmuls from the counter), inside a forked RNG (so training and sampling models draw
    the same numbers as without it).
    """
    import torch

    n = min(rows, int(x.shape[0]))
    if n == 0:
        return 0.0
    xb, yb = x[:n].to(device), (None if y is None else y[:n].to(device))
    was_training = model.training
    devices = [xb.device.index or 0] if xb.device.type == "cuda" else []
    mha = getattr(torch.backends, "mha", None)
    fastpath = mha.get_fastpath_enabled() if mha is not None else None
    model.eval()
    try:
        if mha is not None:
            mha.set_fastpath_enabled(False)
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            total = count_flops(model, lambda: task.loss(model, xb, yb))
    finally:
        model.train(was_training)
        if mha is not None:
            mha.set_fastpath_enabled(fastpath)
    return total / n


# --------------------------------------------------------------------------- device figures


def device_spec(device_name: str) -> tuple[Optional[dict], Optional[float]]:
    """(peak FLOP/s by precision, board watts) for a GPU name, or (None, None) if not in the table."""
    name = device_name.upper()
    for fragment, peaks, watts in DEVICE_SPECS:
        if fragment in name:
            return peaks, watts
    return None, None


def matmul_precision(autocast_bf16: bool) -> str:
    """The precision a CUDA matmul runs in: bf16 under autocast, else tf32 if allowed, else fp32."""
    import torch

    if autocast_bf16:
        return "bf16"
    tf32 = torch.backends.cuda.matmul.allow_tf32 or torch.get_float32_matmul_precision() != "highest"
    return "tf32" if tf32 else "fp32"


def grid_intensity(config) -> tuple[float, str]:
    """(g CO2 per kWh, where the figure came from) from cost.grid_g_per_kwh or cost.country."""
    if config.grid_g_per_kwh is not None:
        return float(config.grid_g_per_kwh), "cost.grid_g_per_kwh"
    return float(GRID_G_PER_KWH[config.country]), f"built-in table, {config.country} (approximate annual average)"


def peak_rss_bytes() -> int:
    """This process's peak resident set size since it started (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --------------------------------------------------------------------------- the meter


class CostMeter:
    """Measures one run from `start()` (before training) to `stop()` (after evaluation).

    Between the two it only reads clocks: nothing runs per step. `block(...)` then assembles
    the manifest's "cost" section; `accounting_seconds` in it is the time the meter itself took.
    """

    def __init__(self, config, device, device_name: str = ""):
        self.config = config
        self.device = device
        self.device_name = device_name
        self.overhead = 0.0
        self.tracker = None
        self.tracker_error: Optional[str] = None
        self.energy: dict[str, Any] = {}

    def start(self) -> None:
        began = time.perf_counter()
        if self.device.type == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats(self.device)
        if self.config.energy in ("auto", "codecarbon"):
            self.tracker = self._start_codecarbon()
        self.cpu0, self.wall0 = _cpu_seconds(), time.perf_counter()
        self.overhead += time.perf_counter() - began

    def stop(self) -> None:
        began = time.perf_counter()
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)
        self.cpu_seconds = _cpu_seconds() - self.cpu0
        self.wall_seconds = time.perf_counter() - self.wall0
        self.energy = self._codecarbon_energy() if self.tracker is not None else {}
        if not self.energy:
            self.energy = self._estimate_energy()
        self.overhead += time.perf_counter() - began

    # -- energy --------------------------------------------------------------------------------
    def _start_codecarbon(self):
        try:
            from codecarbon import OfflineEmissionsTracker
        except ImportError:
            if self.config.energy == "codecarbon":
                from damoxing.core.errors import ConfigError

                raise ConfigError("cost.energy is 'codecarbon' but codecarbon is not installed. Install it "
                                  "(pip install 'damoxing[energy]') or use cost.energy: auto (codecarbon when installed, "
                                  "else an estimate) or estimate.") from None
            return None
        logging.getLogger("codecarbon").setLevel(logging.ERROR)  # it logs INFO lines at every start
        try:
            country = self.config.country if len(self.config.country) == 3 else "USA"  # its CO2 is not used
            tracker = OfflineEmissionsTracker(country_iso_code=country, save_to_file=False, log_level="error",
                                              tracking_mode="process", allow_multiple_runs=True)
            tracker.start()
            return tracker
        except Exception as e:  # noqa: BLE001 - a tracker that cannot start means: estimate
            self.tracker_error = f"codecarbon could not start ({type(e).__name__}: {e})"
            return None

    def _codecarbon_energy(self) -> dict[str, Any]:
        try:
            self.tracker.stop()
            data = self.tracker.final_emissions_data
            kwh = float(data.energy_consumed)
        except Exception as e:  # noqa: BLE001 - a tracker that cannot measure means: estimate
            self.tracker_error = f"codecarbon could not measure ({type(e).__name__}: {e})"
            return {}
        if not kwh > 0:
            self.tracker_error = "codecarbon measured no energy"
            return {}
        import codecarbon

        modes = {type(h).__name__: getattr(h, "_mode", None) for h in getattr(self.tracker, "_hardware", [])}
        cpu_mode = modes.get("CPU")
        measured_cpu = cpu_mode in ("intel_rapl", "intel_power_gadget", "powermetrics", "windows_emi")
        measured_gpu = "GPU" in modes
        parts = [f"CPU {'measured' if measured_cpu else 'estimated'} ({cpu_mode or 'unknown'})",
                 "RAM estimated"] + (["GPU measured (NVML)"] if measured_gpu else [])
        return {
            "energy_kwh": kwh,
            "energy_is_estimate": not (measured_cpu or measured_gpu),
            "energy_method": f"codecarbon {codecarbon.__version__} offline tracker: {', '.join(parts)}",
            "energy_details": {"cpu_kwh": float(data.cpu_energy), "gpu_kwh": float(data.gpu_energy),
                               "ram_kwh": float(data.ram_energy), "cpu_model": data.cpu_model,
                               "seconds": float(data.duration)},
        }

    def _estimate_energy(self) -> dict[str, Any]:
        cpu_joules = self.config.cpu_watts_per_core * self.cpu_seconds
        details: dict[str, Any] = {"cpu_seconds": self.cpu_seconds, "cpu_watts_per_core": self.config.cpu_watts_per_core,
                                   "cpu_kwh": cpu_joules / 3.6e6}
        gpu_joules = 0.0
        parts = [f"CPU {self.config.cpu_watts_per_core:g} W per busy core x {self.cpu_seconds:.2f} CPU-seconds of this process"]
        if self.device.type == "cuda":
            _, table_watts = device_spec(self.device_name)
            watts = self.config.gpu_watts or table_watts or DEFAULT_GPU_WATTS
            # The loop keeps data on the device and never waits on the host per step, so the GPU is
            # taken as busy for the whole span: an upper bound, said so in the method text.
            gpu_joules = watts * self.wall_seconds
            details.update({"gpu_watts": watts, "gpu_utilization": 1.0, "gpu_kwh": gpu_joules / 3.6e6})
            parts.append(f"GPU {watts:g} W x 100% utilization (assumed: an upper bound) x {self.wall_seconds:.2f} s")
        if self.tracker_error:
            details["codecarbon"] = self.tracker_error
        return {
            "energy_kwh": (cpu_joules + gpu_joules) / 3.6e6,
            "energy_is_estimate": True,
            "energy_method": "estimate (TDP x utilization x time): " + "; ".join(parts),
            "energy_details": details,
        }

    # -- the block -----------------------------------------------------------------------------
    def block(self, *, model, task, train_x, train_y, schema, params: int, trainable: int, samples_seen: int,
              train_seconds: float, eval_seconds: float, autocast_bf16: bool) -> dict[str, Any]:
        """The manifest's "cost" section. Counts FLOPs (once, on a few training rows) here."""
        began = time.perf_counter()
        cost: dict[str, Any] = {"params": int(params), "trainable_params": int(trainable)}
        try:
            per_sample = forward_flops_per_sample(model, task, train_x, train_y, self.device)
            cost["flops_per_sample"] = per_sample
            cost["train_flops"] = 3.0 * per_sample * samples_seen  # forward + backward (~2x forward)
            cost["flops_method"] = ("torch FlopCounterMode on the task's forward (2 FLOPs per multiply-add; "
                                    "element-wise ops not counted), recurrent layers counted analytically; "
                                    "train_flops = 3 x forward x samples seen")
        except Exception as e:  # noqa: BLE001 - an op the counter cannot trace must not lose the run
            cost["flops_per_sample"] = cost["train_flops"] = None
            cost["flops_method"] = f"not counted: {type(e).__name__}: {e}"
        cost["train_seconds"] = float(train_seconds)
        cost["eval_seconds"] = float(eval_seconds)
        cost["samples_seen"] = int(samples_seen)
        cost["samples_per_second"] = samples_seen / train_seconds if train_seconds > 0 else None
        if schema.kind in TOKEN_KINDS:
            cost["tokens_per_second"] = _tokens_per_sample(train_x, schema) * cost["samples_per_second"] if train_seconds > 0 else None
        if self.device.type == "cuda":
            import torch

            cost["peak_memory_bytes"] = int(torch.cuda.max_memory_allocated(self.device))
            cost["peak_memory_kind"] = "CUDA max allocated (torch.cuda.max_memory_allocated) during training and evaluation"
            peaks, _ = device_spec(self.device_name)
            precision = matmul_precision(autocast_bf16)
            peak = self.config.peak_flops or (peaks or {}).get(precision)
            cost["device_peak_flops"] = peak
            cost["mfu"] = (cost["train_flops"] / train_seconds / peak) if (peak and cost["train_flops"] and train_seconds > 0) else None
            cost["mfu_basis"] = (f"train_flops / train_seconds / {peak:.3g} FLOP/s ({self.device_name}, {precision})" if peak
                                 else f"unknown peak for '{self.device_name}' ({precision}); set cost.peak_flops")
        else:
            cost["peak_memory_bytes"] = peak_rss_bytes()
            cost["peak_memory_kind"] = "process peak RSS since the process started (getrusage ru_maxrss)"
        grid, source = grid_intensity(self.config)
        cost.update(self.energy)
        cost["grid_g_per_kwh"] = grid
        cost["grid_source"] = source
        cost["co2_kg"] = self.energy["energy_kwh"] * grid / 1000.0
        cost["measured_seconds"] = self.wall_seconds  # the span energy covers: training + evaluation
        self.overhead += time.perf_counter() - began
        cost["accounting_seconds"] = self.overhead
        return cost


def _tokens_per_sample(x, schema) -> float:
    """Mean non-padding tokens per row of the training inputs (all positions if no pad id)."""
    if schema.pad_id is None or x.dim() < 2:
        return float(x[0].numel()) if x.shape[0] else 0.0
    return float((x != schema.pad_id).sum()) / max(1, x.shape[0])
