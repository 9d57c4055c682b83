"""A small configurable CNN: depth, width, residual blocks (with stochastic depth), BatchNorm / LRN / none, dropout."""

from __future__ import annotations

from torch import Tensor, nn

from search.models.norms import NORMS


class ConvBlock(nn.Module):
    """conv-norm-relu, or a ResNet-style basic block (two convs and a skip) when residual."""

    def __init__(self, cin: int, cout: int, norm: str, lrn_size: int, residual: bool,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        make_norm = NORMS.get(norm)
        self.residual = residual
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=norm != "batchnorm")
        self.norm1 = make_norm(cout, lrn_size)
        self.act = nn.ReLU(inplace=True)
        # Plain blocks get parameter-free placeholders so TorchScript can compile forward().
        self.conv2: nn.Module = nn.Identity()
        self.norm2: nn.Module = nn.Identity()
        self.skip: nn.Module = nn.Identity()
        # Stochastic depth: in training, the residual branch of a whole sample is dropped at this rate.
        self.drop_path: nn.Module = nn.Identity()
        if residual and drop_path > 0:
            from timm.layers import DropPath  # (here: importing timm costs ~2 s, which plain CNNs need not pay)

            self.drop_path = DropPath(drop_path)
        if residual:
            self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=norm != "batchnorm")
            self.norm2 = make_norm(cout, lrn_size)
            if cin != cout:
                self.skip = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.act(self.norm1(self.conv1(x)))
        if self.residual:
            out = self.drop_path(self.norm2(self.conv2(out))) + self.skip(x)
            out = self.act(out)
        return out


class SmallCNN(nn.Module):
    """``depth`` stages of ConvBlock; channels double per stage; pool while the map is > 1 px."""

    def __init__(self, in_channels: int, num_classes: int, input_size: int, depth: int = 2, width: int = 16,
                 residual: bool = False, norm: str = "batchnorm", lrn_size: int = 5, dropout: float = 0.0,
                 drop_path_rate: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin, size = in_channels, input_size
        for i in range(depth):
            cout = width * (2 ** i)
            # As in timm: the drop rate grows linearly with depth, deepest block at drop_path_rate.
            rate = drop_path_rate * (i + 1) / depth
            layers.append(ConvBlock(cin, cout, norm, lrn_size, residual, rate))
            if size >= 2:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            cin = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.features(x)).flatten(1)
        return self.classifier(self.dropout(x))

    def get_classifier(self) -> nn.Module:
        return self.classifier
