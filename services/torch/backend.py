"""The PyTorch models: ``torch`` (an ``nn.Module``, an explicit train loop, torchvision's MNIST and a DataLoader)
and ``keras-torch`` (``keras-sequential``'s very network, servekit.keras_models, on Keras' PyTorch backend)."""

from __future__ import annotations

import os

os.environ["KERAS_BACKEND"] = "torch"  # before Keras is first imported: it reads its backend once

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, Sampler, SequentialSampler, TensorDataset
from torchvision import datasets

from servekit.backend import EpochRecord, Layer, Metrics, Progress, TrainConfig, TrainingData
from servekit.keras_models import FreedMemoryKept, SequentialBackend
from servekit.memory import freed_memory_kept
from servekit.mnist import TRAIN_SIZE, write_uncompressed
from servekit.weights import (
    Weights,
    check_weights,
    initial_weights,
    shared_order,
    torch_dense_from_canonical,
    torch_dense_to_canonical,
)

EVAL_BATCH = 1000
TORCHVISION_ROOT = Path(tempfile.gettempdir()) / "servekit-torchvision"


class ConvNet(nn.Module):
    """conv32-pool-conv64-pool-dropout-dense10; returns logits (softmax is applied when serving)."""

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(1, 32, kernel_size=3),
            nn.ReLU(inplace=True),  # in place: the convolution's output is not needed for its backward
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=3),
            nn.ReLU(inplace=True),
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
    network_source = ConvNet  # what GET /source shows (servekit.source); the training step: train_step_source

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
        """Adam + cross-entropy over torchvision's MNIST read from the shared IDX files.

        The images are converted to float once, as whole tensors, and the DataLoader fetches each shuffled batch
        with one indexing operation (a BatchSampler with automatic batching off) instead of 128 ``__getitem__``
        calls through PIL and ``ToTensor`` and a collate: that per-image pipeline cost more than a third of the
        epoch. The batches, and so the run for a seed, are the same as with ``shuffle=True``.
        """
        torch.manual_seed(config.seed)
        self.net = ConvNet()  # initial weights drawn from the seeded generator: same seed, same run
        if config.same_start:  # or the start every framework shares (servekit.weights)
            self.import_weights(initial_weights(config.seed))
        # channels_last: oneDNN's convolutions and the pooling run on NHWC without reordering every tensor.
        self.net.to(memory_format=torch.channels_last)
        with freed_memory_kept():
            history = self._train(data, config, progress)
        self.net.to(memory_format=torch.contiguous_format)  # served as a loaded network is: the same numbers
        return history

    def first_batch(self, data: TrainingData, config: TrainConfig) -> tuple[np.ndarray, np.ndarray, str]:
        """The first batch of the training loader for this seed: what the first step trains on."""
        train_set, _ = _torchvision_splits(data)
        images, labels = next(iter(_shuffled_loader(train_set, config)))
        sampler = "the shared order" if config.same_start else "RandomSampler"
        return images.squeeze(1).numpy(), labels.numpy(), f"torchvision MNIST + DataLoader ({sampler})"

    def _train(self, data: TrainingData, config: TrainConfig, progress: Progress) -> list[EpochRecord]:
        train_set, val_set = _torchvision_splits(data)
        loader = _shuffled_loader(train_set, config)
        val_loader = _batch_loader(val_set, SequentialSampler(val_set), EVAL_BATCH)
        # Fused Adam: one kernel over all parameters instead of a dozen small ops per parameter per step.
        optimizer = torch.optim.Adam(self.net.parameters(), lr=config.learning_rate, fused=True)
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
                # On the CPU every op has finished when it returns: these reads wait for nothing.
                loss_sum += loss.item() * len(labels)
                correct += (logits.argmax(1) == labels).sum().item()
                seen += len(labels)
                progress.step(step, loss_sum / seen, correct / seen)
            self.net.eval()
            val = self._evaluate_loader(val_loader)
            record = EpochRecord(epoch, loss_sum / seen, correct / seen, val.loss, val.accuracy,
                                 round(time.perf_counter() - started, 3))
            progress.end_epoch(record)
            history.append(record)
        return history

    train_step_source = _train  # the loop, each step written in it

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

    def export_weights(self) -> Weights:
        """OIHW kernels to HWIO, and the dense rows from a (c, h, w) flatten to an (h, w, c) one."""
        conv1, conv2, dense = ({name: value.detach().numpy() for name, value in layer.named_parameters()}
                               for layer in self._weighted_layers())
        return {
            "conv1/kernel": conv1["weight"].transpose(2, 3, 1, 0), "conv1/bias": conv1["bias"],
            "conv2/kernel": conv2["weight"].transpose(2, 3, 1, 0), "conv2/bias": conv2["bias"],
            "dense/kernel": torch_dense_to_canonical(dense["weight"]), "dense/bias": dense["bias"],
        }

    def import_weights(self, weights: Weights) -> None:
        weights = check_weights(weights)
        conv1, conv2, dense = self._weighted_layers()
        values = {
            conv1.weight: weights["conv1/kernel"].transpose(3, 2, 0, 1), conv1.bias: weights["conv1/bias"],
            conv2.weight: weights["conv2/kernel"].transpose(3, 2, 0, 1), conv2.bias: weights["conv2/bias"],
            dense.weight: torch_dense_from_canonical(weights["dense/kernel"]), dense.bias: weights["dense/bias"],
        }
        with torch.no_grad():
            for parameter, value in values.items():
                parameter.copy_(torch.from_numpy(np.ascontiguousarray(value)))

    def _weighted_layers(self) -> tuple[nn.Conv2d, nn.Conv2d, nn.Linear]:
        layers = self.net.layers
        return layers[0], layers[3], layers[8]

    @torch.inference_mode()
    def _evaluate_loader(self, batches) -> Metrics:
        loss_sum, correct, seen = 0.0, 0, 0
        for images, labels in batches:
            logits = self.net(images)
            loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
            correct += (logits.argmax(1) == labels).sum().item()
            seen += len(labels)
        return Metrics(loss=loss_sum / seen, accuracy=correct / seen)


def _torchvision_splits(data: TrainingData) -> tuple[TensorDataset, TensorDataset]:
    """torchvision's MNIST over the shared files, split as the common loader splits it, as float tensors.

    ``ToTensor``'s conversion (uint8 -> float32 / 255, one channel first) is applied once to the whole uint8
    tensor: the same values as per image, without a PIL image and a conversion per item and epoch.
    """
    write_uncompressed(data.folder, TORCHVISION_ROOT / "MNIST" / "raw")
    full = datasets.MNIST(TORCHVISION_ROOT, train=True, download=False)
    if not np.array_equal(full.data[: len(data.train)].numpy(), data.train.images):
        raise RuntimeError("torchvision's MNIST differs from the common loader's bytes")

    def split(start: int, stop: int) -> TensorDataset:
        return TensorDataset(full.data[start:stop].unsqueeze(1).float().div(255), full.targets[start:stop])

    return split(0, len(data.train)), split(TRAIN_SIZE, TRAIN_SIZE + len(data.validation))


def _shuffled_loader(dataset: TensorDataset, config: TrainConfig) -> DataLoader:
    """The training batches: reshuffled every epoch by a generator seeded with the run's seed, or under
    ``same_start`` in the order every framework shares."""
    generator = torch.Generator().manual_seed(config.seed)
    sampler = (SharedOrderSampler(len(dataset), config.seed) if config.same_start
               else RandomSampler(dataset, generator=generator))
    return _batch_loader(dataset, sampler, config.batch_size, generator)


class SharedOrderSampler(Sampler[int]):
    """``servekit.weights.shared_order``, a new order each epoch (each pass over the sampler)."""

    def __init__(self, count: int, seed: int):
        self.count, self.seed, self.epoch = count, seed, 0

    def __len__(self) -> int:
        return self.count

    def __iter__(self):
        order = shared_order(self.seed, self.epoch, self.count)
        self.epoch += 1
        return iter(order.tolist())


def _batch_loader(dataset: TensorDataset, sampler, batch_size: int, generator: torch.Generator | None = None):
    """A DataLoader yielding whole batches: each BatchSampler index list is one ``dataset[indices]`` lookup."""
    return DataLoader(dataset, sampler=BatchSampler(sampler, batch_size, drop_last=False), batch_size=None,
                      generator=generator)


class KerasTorchBackend(FreedMemoryKept, SequentialBackend):
    """``keras-torch``: the ``keras-sequential`` network, ``compile`` + ``fit``, on Keras' PyTorch backend."""

    name = "keras-torch"
