"""The engine: schedules, precision and memory format, the trainer with its data paths,
evaluation and predictions. Builds on the pruning, data and data-selection layers.
"""

from tickets.training.precision import Precision, resolve_precision, resolve_channels_last, resolve_device
from tickets.training.schedule import LossFn, OptimizerFactory, parse_step, Schedule, CompressedSchedule, make_schedule
from tickets.training.results import NonFiniteLossError, EvalResult, TrainResult
from tickets.training.evaluation import evaluate, predict
from tickets.training.trainer import interactive, Trainer
from tickets.training.loop import train

__all__ = [
    'Precision',
    'resolve_precision',
    'resolve_channels_last',
    'resolve_device',
    'LossFn',
    'OptimizerFactory',
    'parse_step',
    'Schedule',
    'CompressedSchedule',
    'make_schedule',
    'NonFiniteLossError',
    'EvalResult',
    'TrainResult',
    'evaluate',
    'predict',
    'interactive',
    'Trainer',
    'train',
]
