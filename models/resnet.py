"""ResNet: residual blocks (y = relu(F(x) + x)) let plain deep CNNs train; He et al. 2015.

`resnet18` is the standard ImageNet ResNet-18 (224x224 RGB, 1000 classes, 11.7M parameters),
written here without torchvision, with random weights: the model for speed work.
`resnet-digits` is the same design at digit size (3x3 stem, no max pool, three narrow stages)
and trains on the 8x8 digits.
"""

import functools
from dataclasses import dataclass

import torch
from torch import nn

from models.data import Split, digits
from models.registry import ModelSpec
from models.train import Recipe


@dataclass(frozen=True)
class ResNetConfig:
    blocks: tuple[int, ...] = (2, 2, 2, 2)  # basic blocks per stage; ResNet-18 = 2+2+2+2 blocks x 2 convs + stem + fc
    width: int = 64  # channels of the first stage, doubled at each later stage
    in_channels: int = 3
    image_size: int = 224
    n_classes: int = 1000
    imagenet_stem: bool = True  # 7x7/2 convolution + 3x3/2 max pool; else one 3x3 convolution


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:  # project x when the shape changes
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, c_in, H, W) -> (B, c_out, H/stride, W/stride)
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, config: ResNetConfig = ResNetConfig()):
        super().__init__()
        w = config.width
        if config.imagenet_stem:
            self.stem = nn.Sequential(
                nn.Conv2d(config.in_channels, w, 7, stride=2, padding=3, bias=False),  # (B, w, 112, 112)
                nn.BatchNorm2d(w),
                nn.ReLU(),
                nn.MaxPool2d(3, stride=2, padding=1),  # (B, w, 56, 56)
            )
        else:
            self.stem = nn.Sequential(nn.Conv2d(config.in_channels, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        stages, c_in = [], w
        for i, n_blocks in enumerate(config.blocks):
            c_out = w * 2**i
            for j in range(n_blocks):
                stages.append(BasicBlock(c_in, c_out, stride=2 if i > 0 and j == 0 else 1))
                c_in = c_out
        self.stages = nn.Sequential(*stages)  # ResNet-18: (B, 512, 7, 7)
        self.pool = nn.AdaptiveAvgPool2d(1)  # (B, 512, 1, 1)
        self.fc = nn.Linear(c_in, config.n_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, S, S) -> (B, n_classes) logits
        return self.fc(self.pool(self.stages(self.stem(x))).flatten(1))


@functools.lru_cache(maxsize=None)
def random_images(size: int, n_classes: int, n_train: int = 32, n_test: int = 8) -> Split:
    """Seeded Gaussian images with random labels: inputs of the right shape for speed work, nothing to learn."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n_train + n_test, 3, size, size, generator=g)
    y = torch.randint(0, n_classes, (n_train + n_test,), generator=g)
    return Split(x[:n_train], y[:n_train], x[n_train:], y[n_train:])


def resnet18(config: ResNetConfig = ResNetConfig()) -> ModelSpec:
    return ModelSpec(
        name="resnet18",
        family="ResNet",
        teaches="residual connections, depth, batch norm; the standard model for speed work",
        dataset=f"random {config.image_size}x{config.image_size} images (random weights, speed work only)",
        build=lambda: ResNet(config),
        data=lambda: random_images(config.image_size, config.n_classes),
        recipe=Recipe(epochs=1, batch_size=16, lr=1e-3),
        # Tests: the same graph (every op, every block) at 32x32 and width 8.
        tiny=lambda: resnet18(ResNetConfig(width=8, image_size=32, n_classes=10)),
    )


def resnet_digits(config: ResNetConfig) -> ModelSpec:
    return ModelSpec(
        name="resnet-digits",
        family="ResNet",
        teaches="residual connections, shortcut projections, global average pooling",
        dataset="sklearn digits 8x8",
        build=lambda: ResNet(config),
        data=lambda: digits(as_images=True),
        recipe=Recipe(epochs=15, lr=3e-3, weight_decay=1e-4),
        tiny=lambda: resnet_digits(ResNetConfig(blocks=(1, 1), width=8, in_channels=1, n_classes=10, imagenet_stem=False)),
    )


SPEC = resnet18()
DIGITS_SPEC = resnet_digits(ResNetConfig(blocks=(1, 1, 1), width=16, in_channels=1, image_size=8, n_classes=10, imagenet_stem=False))
