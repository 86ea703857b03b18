"""Training: train_and_evaluate on tf.distribute, the train step, schedules, checkpoints, the reference importer."""
from mtarcface_tf.train.checkpoints import CheckpointError, save_initial_checkpoint
from mtarcface_tf.train.reference_import import ReferenceImportError, import_reference, load_reference_weights
from mtarcface_tf.train.step import make_train_step
from mtarcface_tf.train.trainer import TrainingError, train_and_evaluate, train_model

__all__ = ["CheckpointError", "ReferenceImportError", "TrainingError", "import_reference", "load_reference_weights",
           "make_train_step", "save_initial_checkpoint", "train_and_evaluate", "train_model"]
