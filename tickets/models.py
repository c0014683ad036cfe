"""Architectures by name, as the lottery-ticket papers name them.

:func:`create_model` builds any of:

- ``res20s``, ``res56s``: the CIFAR ResNets of He et al. (2016), 3 stages of width
  16/32/64 with 3 or 9 basic blocks each and parameter-free *option-A* shortcuts
  (stride-2 subsampling and zero-padded channels), a 3x3 stem and a linear classifier ``fc``;
- ``res18``, ``res50``: torchvision's ResNet-18/50 (ImageNet-style 7x7 stride-2 stem and max
  pool) with a ``num_classes``-way classifier, as the reference trains them on CIFAR;
- ``vgg16_bn``: VGG-16 with batch norm in its CIFAR form (13 convolutions, global average
  pool, one linear classifier ``classifier``);
- ``timm:<name>``: ``timm.create_model(name, num_classes=..., pretrained=False)``;
- ``torchvision:<name>``: ``torchvision.models.get_model(name, num_classes=...)``.

Example::

    model = create_model("res20s", num_classes=10)
    model = create_model("timm:resnet18", num_classes=100)
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["MODELS", "CifarResNet", "VGG", "check_model_name", "create_model", "list_models", "register_model"]

ModelFactory = Callable[..., nn.Module]
MODELS: dict[str, ModelFactory] = {}
PREFIXES = ("timm:", "torchvision:")


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator adding ``factory(num_classes, **kwargs) -> nn.Module`` to :data:`MODELS`."""

    def add(factory: ModelFactory) -> ModelFactory:
        if name in MODELS:
            raise ValueError(f"model {name!r} is already registered")
        MODELS[name] = factory
        return factory

    return add


def list_models() -> list[str]:
    """Registered names, plus the ``timm:<name>`` / ``torchvision:<name>`` forms."""
    return sorted(MODELS) + [f"{p}<name>" for p in PREFIXES]


def check_model_name(name: str) -> None:
    """Raise a ValueError naming ``name`` and the valid forms unless :func:`create_model` knows it
    (cheap: builds nothing, so command lines can be checked before loading data)."""
    if name.startswith("timm:"):
        import timm

        arch = name[len("timm:") :]
        if not timm.is_model(arch):
            raise ValueError(f"timm has no model {arch!r} (from {name!r}); see timm.list_models()")
    elif name.startswith("torchvision:"):
        import torchvision

        arch = name[len("torchvision:") :]
        if arch not in torchvision.models.list_models():
            raise ValueError(f"torchvision has no model {arch!r} (from {name!r}); see torchvision.models.list_models()")
    elif name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(list_models())}")


def create_model(name: str, num_classes: int, **kwargs: object) -> nn.Module:
    """Build an untrained model by name.

    Args:
        name: a registered name (``res20s``, ``res56s``, ``res18``, ``res50``, ``vgg16_bn``),
            ``timm:<timm model name>`` or ``torchvision:<torchvision model name>``.
        num_classes: size of the classifier's output.
        **kwargs: passed on to the factory (e.g. ``drop_rate`` for timm models).

    Raises:
        ValueError: an unknown name (the message lists the valid ones) or ``num_classes < 1``.
    """
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    check_model_name(name)
    if name.startswith("timm:"):
        import timm

        return timm.create_model(name[len("timm:") :], num_classes=num_classes, pretrained=False, **kwargs)
    if name.startswith("torchvision:"):
        import torchvision

        return torchvision.models.get_model(name[len("torchvision:") :], weights=None, num_classes=num_classes, **kwargs)
    return MODELS[name](num_classes=num_classes, **kwargs)


# --------------------------------------------------------------------------- CIFAR ResNets
class _ShortcutA(nn.Module):
    """Option-A shortcut: subsample by 2 and pad the new channels with zeros (no weights)."""

    def __init__(self, extra_channels: int) -> None:
        super().__init__()
        self.extra = extra_channels

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, ::2, ::2]
        half = self.extra // 2
        return F.pad(x, (0, 0, 0, 0, half, self.extra - half))


class _BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        needs = stride != 1 or in_planes != planes
        self.shortcut: nn.Module = _ShortcutA(planes - in_planes) if needs else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 images with option-A shortcuts (He et al. 2016, section 4.2).

    Args:
        depth: 6n+2 (20, 32, 44, 56, 110, ...).
        num_classes: classifier outputs.
        width: channels of the first stage (16 in the paper; stages use width, 2x, 4x).
    """

    def __init__(self, depth: int, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"CifarResNet depth must be 6n+2 with n >= 1 (20, 32, 44, 56, 110), got {depth}")
        n = (depth - 2) // 6
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        layers, in_planes = [], width
        for stage, planes in enumerate((width, 2 * width, 4 * width)):
            blocks = []
            for b in range(n):
                blocks.append(_BasicBlock(in_planes, planes, 2 if (stage > 0 and b == 0) else 1))
                in_planes = planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


@register_model("res20s")
def res20s(num_classes: int = 10, **kwargs: object) -> nn.Module:
    """ResNet-20 (0.27M parameters) with option-A shortcuts."""
    return CifarResNet(20, num_classes, **kwargs)  # type: ignore[arg-type]


@register_model("res56s")
def res56s(num_classes: int = 10, **kwargs: object) -> nn.Module:
    """ResNet-56 (0.85M parameters) with option-A shortcuts."""
    return CifarResNet(56, num_classes, **kwargs)  # type: ignore[arg-type]


@register_model("res18")
def res18(num_classes: int = 10, **kwargs: object) -> nn.Module:
    """torchvision ResNet-18, ImageNet-style stem."""
    import torchvision

    return torchvision.models.resnet18(weights=None, num_classes=num_classes, **kwargs)


@register_model("res50")
def res50(num_classes: int = 10, **kwargs: object) -> nn.Module:
    """torchvision ResNet-50, ImageNet-style stem."""
    import torchvision

    return torchvision.models.resnet50(weights=None, num_classes=num_classes, **kwargs)


# --------------------------------------------------------------------------- VGG
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG(nn.Module):
    """VGG with batch norm for small images: ``features`` (conv-BN-ReLU, max pools),
    global average pooling, and a single linear ``classifier``.

    Args:
        config: channel counts, ``"M"`` for a 2x2 max pool.
        num_classes: classifier outputs.
    """

    def __init__(self, config: tuple[int | str, ...] = _VGG16, num_classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 3
        for item in config:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(in_channels, int(item), 3, padding=1), nn.BatchNorm2d(int(item)), nn.ReLU(inplace=True)]
                in_channels = int(item)
        self.num_classes = num_classes
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(in_channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def forward(self, x: Tensor) -> Tensor:
        x = F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)
        return self.classifier(x)


@register_model("vgg16_bn")
def vgg16_bn(num_classes: int = 10, **kwargs: object) -> nn.Module:
    """VGG-16 with batch norm, CIFAR form (14.7M parameters)."""
    return VGG(_VGG16, num_classes, **kwargs)  # type: ignore[arg-type]
