"""The PyTorch model: an ``nn.Module``, an explicit train loop, torchvision's MNIST and a DataLoader."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms

from servekit.backend import EpochRecord, Layer, Metrics, Progress, TrainConfig, TrainingData
from servekit.mnist import TRAIN_SIZE, write_uncompressed

EVAL_BATCH = 1000
TORCHVISION_ROOT = Path(tempfile.gettempdir()) / "servekit-torchvision"


class ConvNet(nn.Module):
    """conv32-pool-conv64-pool-dropout-dense10; returns logits (softmax is applied when serving)."""

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(1, 32, kernel_size=3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Dropout(0.5),
            nn.Linear(1600, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class TorchBackend:
    """The ``torch`` model."""

    name = "torch"
    framework = "torch"

    def __init__(self):
        self.net = ConvNet().eval()

    def layers(self) -> list[Layer]:
        """Each layer's type, output shape (N, C, H, W as PyTorch has it) and parameter count."""
        table = []
        x = torch.zeros(1, 1, 28, 28)
        with torch.inference_mode():
            for layer in self.net.layers:
                x = layer(x)
                params = sum(p.numel() for p in layer.parameters())
                table.append(Layer(type(layer).__name__, [None, *x.shape[1:]], params))
        return table

    def train(self, data: TrainingData, config: TrainConfig, progress: Progress) -> list[EpochRecord]:
        """Adam + cross-entropy over torchvision's MNIST read from the shared IDX files."""
        torch.manual_seed(config.seed)
        self.net = ConvNet()  # initial weights drawn from the seeded generator: same seed, same run
        train_set, val_set = _torchvision_splits(data)
        loader = DataLoader(
            train_set, batch_size=config.batch_size, shuffle=True,
            generator=torch.Generator().manual_seed(config.seed),
        )
        optimizer = torch.optim.Adam(self.net.parameters(), lr=config.learning_rate)
        history = []
        for epoch in range(1, config.epochs + 1):
            progress.begin_epoch(epoch, len(loader))
            started = time.perf_counter()
            self.net.train()
            loss_sum, correct, seen = 0.0, 0, 0
            for step, (images, labels) in enumerate(loader, start=1):
                optimizer.zero_grad()
                logits = self.net(images)
                loss = F.cross_entropy(logits, labels)
                loss.backward()
                optimizer.step()
                loss_sum += loss.item() * len(labels)
                correct += (logits.argmax(1) == labels).sum().item()
                seen += len(labels)
                progress.step(step, loss_sum / seen, correct / seen)
            self.net.eval()
            val = self._evaluate_loader(DataLoader(val_set, batch_size=EVAL_BATCH))
            record = EpochRecord(epoch, loss_sum / seen, correct / seen, val.loss, val.accuracy,
                                 round(time.perf_counter() - started, 3))
            progress.end_epoch(record)
            history.append(record)
        return history

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> Metrics:
        """Mean cross-entropy and accuracy over NHWC float32 images."""
        images = torch.from_numpy(x).permute(0, 3, 1, 2)
        labels = torch.from_numpy(y.astype(np.int64))
        batches = zip(images.split(EVAL_BATCH), labels.split(EVAL_BATCH), strict=True)
        return self._evaluate_loader(batches)

    @torch.inference_mode()
    def predict(self, x: np.ndarray) -> np.ndarray:
        """Softmax probabilities for NHWC float32 images."""
        images = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)
        return F.softmax(self.net(images), dim=1).numpy()

    def save(self, folder: Path) -> None:
        torch.save(self.net.state_dict(), folder / "weights.pt")

    def load(self, folder: Path) -> None:
        self.net.load_state_dict(torch.load(folder / "weights.pt", weights_only=True))
        self.net.eval()

    @torch.inference_mode()
    def _evaluate_loader(self, batches) -> Metrics:
        loss_sum, correct, seen = 0.0, 0, 0
        for images, labels in batches:
            logits = self.net(images)
            loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
            correct += (logits.argmax(1) == labels).sum().item()
            seen += len(labels)
        return Metrics(loss=loss_sum / seen, accuracy=correct / seen)


def _torchvision_splits(data: TrainingData) -> tuple[Subset, Subset]:
    """torchvision's MNIST over the shared files, split as the common loader splits it."""
    write_uncompressed(data.folder, TORCHVISION_ROOT / "MNIST" / "raw")
    full = datasets.MNIST(TORCHVISION_ROOT, train=True, download=False, transform=transforms.ToTensor())
    if not np.array_equal(full.data[: len(data.train)].numpy(), data.train.images):
        raise RuntimeError("torchvision's MNIST differs from the common loader's bytes")
    return Subset(full, range(len(data.train))), Subset(full, range(TRAIN_SIZE, TRAIN_SIZE + len(data.validation)))
