"""Experiment configs (ml_collections); importable as mtarcface_tf.configs once installed."""
