"""Training: train_and_evaluate on tf.distribute, the train step, schedules, checkpoints."""
from mtarcface_tf._lazy import lazy_exports

_EXPORTS = {
    "train_and_evaluate": "trainer",
    "train_model": "trainer",
    "TrainingError": "trainer",
    "load_model": "checkpoints",
    "CheckpointError": "checkpoints",
    "make_train_step": "step",
    "save_initial_checkpoint": "checkpoints",
    "import_reference": "reference_import",
    "load_reference_weights": "reference_import",
    "ReferenceImportError": "reference_import",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
