"""Image patch nets: a small default CNN and the paper's ResNet-18, both ending in log-softmax.

Neither normalises its input: each starts with conv → BatchNorm, and BatchNorm already removes
any per-channel affine scaling of the pixels (up to zero-padding at the borders), so raw pixel
ranges train fine without constants fitted on calibration data.
"""

from __future__ import annotations

import torch
from torch import nn

MIN_SIDE = 8  # two 2× poolings in SmallCNN, three stride-2 stages in ResNet18


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    """3×3 conv without bias (BatchNorm's shift replaces it), BatchNorm, ReLU."""
    return [
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU blocks (2× max-pool after the first two), global average pool, linear.

    Global pooling makes it size-agnostic (any H, W ≥ 8); ~24k parameters plus 65·K for the
    head, so it fits a calibration set of a few thousand images without memorising it.
    """

    def __init__(
        self, in_channels: int, num_classes: int, widths: tuple[int, int, int] = (16, 32, 64)
    ) -> None:
        super().__init__()
        w1, w2, w3 = widths
        self.features = nn.Sequential(
            *conv_bn_relu(in_channels, w1),
            nn.MaxPool2d(2),
            *conv_bn_relu(w1, w2),
            nn.MaxPool2d(2),
            *conv_bn_relu(w2, w3),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(w3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.head(self.features(x)), dim=-1)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3×3 convs with a (projected when the shape changes) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 (BasicBlock ×[2, 2, 2, 2], widths 64…512) with the small-image stem.

    The paper's patch for CIFAR-sized inputs: the ImageNet stem (7×7 stride-2 conv + max-pool)
    would shrink a 32×32 image to 8×8 before the first block, so it is a 3×3 stride-1 conv.
    Written out here so that training does not depend on torchvision.
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(*conv_bn_relu(in_channels, 64))
        blocks: list[nn.Module] = []
        c_in = 64
        for width, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [BasicBlock(c_in, width, stride), BasicBlock(width, width, 1)]
            c_in = width
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.head(self.pool(self.blocks(self.stem(x)))), dim=-1)
