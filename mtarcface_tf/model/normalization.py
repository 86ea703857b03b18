"""The normalization layers of the LResNet: the reference's plain BatchNormalization or its batch renormalization.

The reference (dmonterom/face_recognition_TF2) has one network file per choice: ``resnet.py`` (plain BN, L2 on
gamma only; what its evaluation.py builds) and ``resnet_batchRenorm.py`` (what its train.py / train_multigpu.py build
and what its published MS1M models B and C were trained with): the same BN plus ``renorm=True`` with clipping
rmax 3, rmin 0.3333, dmax 5, renorm momentum 0.9, and L2 on beta as well as gamma (fc1's BN included). Keras 3's own
``BatchNormalization(renorm=...)`` computes what tf_keras's does (checked by ``tests/test_renorm_parity.py``) and
names its state like it (``moving_stddev``, ``renorm_mean``, ``renorm_stddev``), on the TensorFlow and JAX backends.
At inference both kinds use ``moving_mean`` / ``moving_variance`` only.
"""
import keras
from keras import layers

BATCH_NORM = "batch_norm"           # resnet.py
BATCH_RENORM = "batch_renorm"       # resnet_batchRenorm.py
NORMS = (BATCH_NORM, BATCH_RENORM)
DEFAULT_NORM = BATCH_NORM           # build_lresnet50's network is resnet.py's; configs/paper.py picks renorm
RENORM_CLIPPING = {"rmax": 3.0, "rmin": 0.3333, "dmax": 5.0}
RENORM_MOMENTUM = 0.9


def check_norm(norm):
    """Returns ``norm`` when it is one of ``NORMS``; raises ValueError naming the choices otherwise."""
    if norm not in NORMS:
        raise ValueError(f"config.model.norm={norm!r}: choose one of {list(NORMS)}")
    return norm


def norm_layer(name, norm=DEFAULT_NORM, momentum=0.9, epsilon=2e-5, weight_decay=5e-4, scale=True,
               renorm_clipping=None, renorm_momentum=RENORM_MOMENTUM):
    """Returns the normalization layer ``name`` of the reference's network file for ``norm``.

    Args:
      name: layer name (the reference's, e.g. ``stage1_unit1_bn1``).
      norm: ``"batch_norm"`` (L2 ``weight_decay`` on gamma) or ``"batch_renorm"`` (renorm, L2 on gamma and beta).
      momentum, epsilon: moving-average momentum and variance epsilon (reference: 0.9, 2e-5).
      weight_decay: L2 factor (0 disables).
      scale: whether the layer has gamma (False for ``fc1``).
      renorm_clipping: dict with ``rmax``, ``rmin``, ``dmax`` (None: the reference's ``RENORM_CLIPPING``).
      renorm_momentum: momentum of the renorm statistics.
    Returns:
      a ``keras.layers.BatchNormalization`` acting on the last axis of [B, ..., C] float inputs.
    """
    check_norm(norm)
    l2 = keras.regularizers.L2(weight_decay) if weight_decay else None
    renorm = norm == BATCH_RENORM
    extra = {}
    if renorm:
        extra = {"renorm": True, "renorm_momentum": renorm_momentum,
                 "renorm_clipping": dict(renorm_clipping or RENORM_CLIPPING)}
    return layers.BatchNormalization(momentum=momentum, epsilon=epsilon, scale=scale,
                                     gamma_regularizer=l2 if scale else None,
                                     beta_regularizer=l2 if renorm else None, name=name, **extra)
