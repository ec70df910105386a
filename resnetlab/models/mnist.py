"""The small LeNet-style CNN for MNIST (LeCun et al. 1998), with ReLU and max-pool: a model
that checks a whole training pipeline in seconds."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from resnetlab.errors import UserError
from resnetlab.models.registry import register_model
from resnetlab.models.resnet import init_weights


class MnistCNN(nn.Module):
    """conv 5x5 (6) - pool - conv 5x5 (16) - pool - fc 120 - fc 84 - fc; 28x28 inputs."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, kernel_size=5)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.fc1 = nn.Linear(16 * 4 * 4, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc = nn.Linear(84, num_classes)  # `fc` like every model here: one name for the head
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.conv1(x)))  # 28x28 -> 24x24 -> 12x12
        x = self.maxpool(self.relu(self.conv2(x)))  # 12x12 -> 8x8 -> 4x4
        x = torch.flatten(x, 1)
        x = self.relu(self.fc1(x))
        x = self.relu(self.fc2(x))
        return self.fc(x)


@register_model(
    family="mnist",
    input_size=(1, 28, 28),
    num_classes=10,
    paper="LeCun et al. 1998, Gradient-Based Learning Applied to Document Recognition",
)
def mnist_cnn(
    num_classes: int = 10, in_channels: int = 1, zero_init_residual: bool = False
) -> MnistCNN:
    """LeNet-5-like CNN: the smoke-test model, a whole training run on MNIST in seconds."""
    if zero_init_residual:
        raise UserError("zero_init_residual needs residual blocks; mnist_cnn has none")
    return MnistCNN(num_classes, in_channels)
