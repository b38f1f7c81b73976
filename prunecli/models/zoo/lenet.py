"""LeNet-5 (LeCun et al. 1998), the common ReLU/max-pool variant for 28x28 MNIST."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from prunecli.models.zoo.mlp import positive_int
from prunecli.models.zoo.registry import ZooModel, register_arch


@register_arch("lenet5", "LeNet-5 conv net for MNIST 28x28 (LeCun et al. 1998), ReLU + max-pool")
def lenet5(num_classes: int = 10) -> ZooModel:
    num_classes = positive_int("num_classes", num_classes)
    module = nn.Sequential(
        OrderedDict(
            # padding 2 turns 28x28 into the 32x32 input the original network was designed for
            conv1=nn.Conv2d(1, 6, 5, padding=2),
            relu1=nn.ReLU(),
            pool1=nn.MaxPool2d(2),
            conv2=nn.Conv2d(6, 16, 5),
            relu2=nn.ReLU(),
            pool2=nn.MaxPool2d(2),
            flatten=nn.Flatten(),
            fc1=nn.Linear(16 * 5 * 5, 120),
            relu3=nn.ReLU(),
            fc2=nn.Linear(120, 84),
            relu4=nn.ReLU(),
            fc3=nn.Linear(84, num_classes),
        )
    )
    return ZooModel(module, (1, 28, 28), num_classes)
