"""Small modules that map one feature space onto another (FitNet's regressor, SAKD's adaptors)."""

from __future__ import annotations

from torch import Tensor, nn


class ConvReg(nn.Module):
    """Map a (C_in, H_in, W_in) feature map to (C_out, H_out, W_out): one conv-type layer + BN + ReLU.

    The layer depends on the heights (RepDistiller's FitNet ``ConvReg`` plus the SAKD authors' last
    branch, ``method.md`` §1.6): H_in = 2·H_out → 3×3 conv stride 2; 2·H_in = H_out → 4×4 transposed
    conv stride 2; other H_in ≥ H_out → conv with kernel 1+H_in−H_out (1×1 when equal); other
    H_in < H_out → transposed conv with stride ⌊H_out/H_in⌋.
    """

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        out_shape: tuple[int, int, int],
        use_relu: bool = True,
    ) -> None:
        super().__init__()
        c_in, h_in, w_in = in_shape
        c_out, h_out, w_out = out_shape
        if h_in == 2 * h_out:
            self.conv: nn.Module = nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)
        elif 2 * h_in == h_out:
            self.conv = nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1)
        elif h_in >= h_out:
            self.conv = nn.Conv2d(c_in, c_out, (1 + h_in - h_out, 1 + w_in - w_out))
        else:
            stride = h_out // h_in
            kernel = (h_out - stride * (h_in - 1), w_out - stride * (w_in - 1))
            self.conv = nn.ConvTranspose2d(c_in, c_out, kernel, stride=stride)
        self.bn = nn.BatchNorm2d(c_out)
        self.act = nn.ReLU(inplace=False) if use_relu else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H_in, W_in) -> (B, C_out, H_out, W_out)."""
        return self.act(self.bn(self.conv(x)))


def make_connector(in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> nn.Module:
    """ConvReg between feature maps, a plain Linear between pooled vectors."""
    if len(in_shape) == 3 and len(out_shape) == 3:
        return ConvReg(in_shape, out_shape)  # type: ignore[arg-type]
    if len(in_shape) == 1 and len(out_shape) == 1:
        return nn.Linear(in_shape[0], out_shape[0])
    raise ValueError(f"cannot connect a feature of shape {in_shape} to one of shape {out_shape}")
