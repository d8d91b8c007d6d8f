"""Mixed-precision training: SOLVER.AMP.ENABLED, with SOLVER.AMP.PRECISION "fp16" or "bf16".

detectron2's AMPTrainer knows float16 only through its constructor, requires CUDA and uses the
deprecated torch.cuda.amp. `MixedPrecisionTrainer` is the same training step with
torch.autocast on the model's device type (CUDA, or the CPU for tests) and either precision:

- "fp16": float16 autocast with a gradient scaler (float16 gradients underflow without one);
- "bf16": bfloat16 autocast, no scaler (bfloat16 has float32's exponent range). Needs a GPU with
  bfloat16 support (Ampere or later) to be fast.

What stays float32 under autocast, whatever the precision: the GMM's embedding normalisation,
its Gaussian log-likelihoods (gmm/likelihood.py), the E-step (gmm/assignment.py), the rows set
aside for the memory and the memory's exact statistics (int64 fixed point), the M-step; and the
deformable attention and the Hungarian matcher's costs of Mask2Former. The backbone, the decoder
and the GMM's projection run in the chosen precision.

The scaler's state is checkpointed under "grad_scaler", as AMPTrainer does.
"""

import time

import torch
from detectron2.engine import SimpleTrainer

__all__ = ["AMP_PRECISIONS", "amp_dtype", "MixedPrecisionTrainer", "build_step_trainer"]

AMP_PRECISIONS = {"fp16": torch.float16, "bf16": torch.bfloat16}


def amp_dtype(cfg) -> torch.dtype:
    """The autocast dtype of SOLVER.AMP.PRECISION; ValueError naming the key for another value."""
    name = cfg.SOLVER.AMP.PRECISION
    if name not in AMP_PRECISIONS:
        raise ValueError(
            f"SOLVER.AMP.PRECISION must be one of {sorted(AMP_PRECISIONS)}, got {name!r}"
        )
    return AMP_PRECISIONS[name]


class MixedPrecisionTrainer(SimpleTrainer):
    """SimpleTrainer whose forward runs under torch.autocast(device_type, precision)."""

    def __init__(
        self,
        model,
        data_loader,
        optimizer,
        precision: torch.dtype = torch.bfloat16,
        device_type: str = None,
    ):
        super().__init__(model, data_loader, optimizer)
        if precision not in AMP_PRECISIONS.values():
            raise ValueError(
                f"MixedPrecisionTrainer: precision must be torch.float16 or torch.bfloat16, got {precision}"
            )
        self.precision = precision
        self.device_type = device_type or next(model.parameters()).device.type
        self.grad_scaler = torch.amp.GradScaler(
            self.device_type, enabled=precision == torch.float16
        )

    def run_step(self):
        assert self.model.training, "[MixedPrecisionTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start
        with torch.autocast(self.device_type, dtype=self.precision):
            loss_dict = self.model(data)
            if isinstance(loss_dict, torch.Tensor):
                losses, loss_dict = loss_dict, {"total_loss": loss_dict}
            else:
                losses = sum(loss_dict.values())
        self.optimizer.zero_grad()
        self.grad_scaler.scale(losses).backward()
        self.after_backward()
        self._write_metrics(loss_dict, data_time)
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()

    def state_dict(self):
        ret = super().state_dict()
        ret["grad_scaler"] = self.grad_scaler.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if "grad_scaler" in state_dict:  # absent in a checkpoint of a run without AMP
            self.grad_scaler.load_state_dict(state_dict["grad_scaler"])


def build_step_trainer(cfg, model, data_loader, optimizer):
    """The trainer of one step: MixedPrecisionTrainer (SOLVER.AMP.ENABLED, its precision) or
    SimpleTrainer. The precision is checked also when AMP is off, so a typo never waits for the
    day AMP is switched on."""
    dtype = amp_dtype(cfg)
    if cfg.SOLVER.AMP.ENABLED:
        return MixedPrecisionTrainer(model, data_loader, optimizer, precision=dtype)
    return SimpleTrainer(model, data_loader, optimizer)
