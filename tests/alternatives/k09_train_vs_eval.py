"""Independent alternative solution of kata 09 (train() vs eval())."""

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

DROPOUT_TYPES: tuple[type[nn.Module], ...] = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
)


def _snapshot(model: nn.Module) -> list[tuple[nn.Module, bool]]:
    """Every distinct submodule (root included) with its own `training` flag."""
    return [(module, module.training) for module in model.modules()]


def _restore(snapshot: list[tuple[nn.Module, bool]]) -> None:
    """Write each recorded flag back onto its own module only (no recursion through `train()`)."""
    for module, flag in snapshot:
        module.training = flag


def predict(model: nn.Module, x: Tensor) -> Tensor:
    """Eval-mode forward pass under `torch.inference_mode()`, flags restored one by one."""
    snapshot = _snapshot(model)
    try:
        for module, _ in snapshot:
            module.training = False
        with torch.inference_mode():
            return model(x)
    finally:
        _restore(snapshot)


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Yield `model` with every submodule in eval mode; restore each flag on exit, even on error."""
    snapshot = _snapshot(model)
    try:
        model.train(False)
        yield model
    finally:
        _restore(snapshot)


def mc_dropout_predict(model: nn.Module, x: Tensor, samples: int) -> tuple[Tensor, Tensor]:
    """Dropout-only train mode; mean and unbiased std accumulated online with Welford's algorithm."""
    if samples < 2:
        raise ValueError(f"samples must be at least 2, got {samples}")
    snapshot = _snapshot(model)
    try:
        for module, _ in snapshot:
            module.training = isinstance(module, DROPOUT_TYPES)
        with torch.no_grad():
            mean: Tensor | None = None
            m2: Tensor | None = None
            out_dtype = None
            for n in range(1, samples + 1):
                out = model(x)
                out_dtype = out.dtype
                value = out.float() if out.dtype in (torch.float16, torch.bfloat16) else out
                if mean is None or m2 is None:
                    mean = value.clone()
                    m2 = torch.zeros_like(value)
                    continue
                delta = value - mean
                mean = mean + delta / n
                m2 = m2 + delta * (value - mean)
            assert mean is not None and m2 is not None and out_dtype is not None
            std = torch.sqrt(m2 / (samples - 1))
            return mean.to(out_dtype), std.to(out_dtype)
    finally:
        _restore(snapshot)


class MyBatchNorm1d(nn.Module):
    """Hand-written BatchNorm1d: channels moved last and flattened, statistics reduced with einsum."""

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        """Parameters and buffers named, shaped and typed as `nn.BatchNorm1d`'s."""
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        if affine:
            self.weight: nn.Parameter | None = nn.Parameter(
                torch.ones(num_features, device=device, dtype=dtype)
            )
            self.bias: nn.Parameter | None = nn.Parameter(
                torch.zeros(num_features, device=device, dtype=dtype)
            )
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, device=device, dtype=dtype))
            self.register_buffer("running_var", torch.ones(num_features, device=device, dtype=dtype))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def extra_repr(self) -> str:
        """Same summary line as torch's module."""
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"track_running_stats={self.track_running_stats}"
        )

    def forward(self, x: Tensor) -> Tensor:
        """Batch or running statistics by mode; running buffers blended in with `lerp_`."""
        if x.dim() not in (2, 3):
            raise ValueError(f"expected 2D or 3D input (got {x.dim()}D input)")
        running_mean: Tensor | None = self.running_mean  # type: ignore[assignment]
        running_var: Tensor | None = self.running_var  # type: ignore[assignment]
        counter: Tensor | None = self.num_batches_tracked  # type: ignore[assignment]

        factor = 0.0
        if self.training and self.track_running_stats and counter is not None:
            counter.add_(1)
            factor = 1.0 / float(counter.item()) if self.momentum is None else float(self.momentum)
        use_batch_stats = self.training or (running_mean is None and running_var is None)
        update = self.training and self.track_running_stats and running_mean is not None

        channels = x.shape[1]
        work_dtype = torch.promote_types(x.dtype, torch.float32)
        xw = x.to(work_dtype)
        stat_shape = (1, channels) + (1,) * (x.dim() - 2)

        if use_batch_stats:
            count = x.numel() // channels if channels else 0
            if x.shape[0] * (x.shape[2] if x.dim() == 3 else 1) == 1:
                raise ValueError(
                    f"Expected more than 1 value per channel when training, got input size {tuple(x.shape)}"
                )
            # Channels last, every other axis flattened into rows: (M, C).
            rows = xw.movedim(1, -1).reshape(-1, channels)
            # Shifted-data mean: summing the small residuals around one sample per channel keeps float32
            # accurate when a channel's offset is large next to its spread (the pivot carries no gradient).
            pivot = rows[0].detach()
            mean = pivot + torch.einsum("mc->c", rows - pivot) / count
            centred = rows - mean
            sq_sum = torch.einsum("mc,mc->c", centred, centred)
            var = sq_sum / count
            if update:
                assert running_mean is not None and running_var is not None
                with torch.no_grad():
                    unbiased = sq_sum.detach() / (count - 1)
                    running_mean.lerp_(mean.detach().to(running_mean.dtype), factor)
                    running_var.lerp_(unbiased.to(running_var.dtype), factor)
        else:
            assert running_mean is not None and running_var is not None
            mean = running_mean.to(work_dtype)
            var = running_var.to(work_dtype)

        # Centre first, then scale: folding the mean into a shift (x * a + b) cancels badly for offset data.
        scale = torch.rsqrt(var + self.eps)
        if self.weight is not None:
            scale = scale * self.weight.to(work_dtype)
        out = (xw - mean.reshape(stat_shape)) * scale.reshape(stat_shape)
        if self.bias is not None:
            out = out + self.bias.to(work_dtype).reshape(stat_shape)
        return out.to(x.dtype)
