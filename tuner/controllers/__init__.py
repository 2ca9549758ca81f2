"""Pure controllers: reports in, decisions out. No redis, no ray."""

from tuner.controllers.base import Controller, LRController, MixtureController, Plan
from tuner.controllers.stagewise import StagewiseConfig, StagewiseLR

__all__ = [
    "Controller",
    "LRController",
    "MixtureController",
    "Plan",
    "StagewiseConfig",
    "StagewiseLR",
]
