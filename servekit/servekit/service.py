"""What every role of a framework service shares: its models, the model repository and the MNIST data."""

from __future__ import annotations

import logging

from .backend import Backend, FrameworkInfo, TrainingData
from .errors import NotFound, NotReady
from .mnist import MnistData, MnistUnavailable, load_mnist
from .models import ServedModel
from .repository import ModelRepository
from .settings import Settings

log = logging.getLogger(__name__)


class ModelService:
    """The models of one framework service, where their versions live, and the data they train and test on."""

    def __init__(self, backend_classes: list[type[Backend]], info: FrameworkInfo, settings: Settings):
        self.info = info
        self.settings = settings
        self.models: dict[str, ServedModel] = {}
        for backend_class in backend_classes:
            served = ServedModel(backend_class)
            self.models[served.name] = served
        self.repository = ModelRepository(settings.model_repository, keep_versions=settings.keep_versions)
        self.data: MnistData | None = None
        self.data_error: str | None = None
        try:
            self.data = load_mnist(settings.mnist_dir)
        except MnistUnavailable as exc:
            self.data_error = str(exc)
            log.error("%s", exc)

    def select(self, name: str | None) -> list[ServedModel]:
        """The named model (NotFound if unknown), or all models when name is None."""
        if name is None:
            return list(self.models.values())
        if name not in self.models:
            raise NotFound(f"unknown model {name!r}; this service has {', '.join(self.models)}")
        return [self.models[name]]

    def training_data(self, train_limit: int | None = None) -> TrainingData:
        """What a backend trains on: the (limited) train split and the validation split; 503 without MNIST."""
        data = self.require_data()
        return TrainingData(data.train.head(train_limit), data.validation, data.folder)

    def require_data(self) -> MnistData:
        """The loaded MNIST data; NotReady (503) when it could not be loaded."""
        if self.data is None:
            raise NotReady(f"MNIST is not available: {self.data_error}")
        return self.data
