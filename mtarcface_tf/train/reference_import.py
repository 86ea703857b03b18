"""Loads the reference's published TF2 checkpoints (dmonterom/face_recognition_TF2) into our LResNet networks.

The reference saves its subclassed ``train_model`` with ``save_weights``: an object-based checkpoint keyed by
POSITION, ``resnet/layer_with_weights-K/<attr>/.ATTRIBUTES/VARIABLE_VALUE`` (K counts the layers owning weights in
the order of its functional ResNet's ``layers``) plus ``arcface/kernel`` [512, num_classes]. No layer names are in the
file, so the import rebuilds the reference's order from the layer names of ``resnet.py`` (``reference_layer_names``),
finds each of those layers in our network by name, and checks every variable's shape before assigning anything.
Our mask head has no counterpart in the reference and stays freshly initialised.

Two conversions make the imported network ours exactly:
- Channel order. The reference's network reads BGR (its training step concatenates B, G, R; its evaluation.py
  converts RGB to BGR); ours reads RGB. conv0 is the first layer and the input normalization is the same for every
  channel, so reversing the input-channel axis of conv0's kernel gives, on RGB, exactly what the reference gives
  on the same image as BGR.
- Batch renormalization state. The reference's training network (resnet_batchRenorm.py) keeps renorm state in
  every BN layer. TensorFlow has written it in two forms: up to TF 1.14 ``renorm_mean`` / ``renorm_stddev`` as
  zero-started moving averages with scalar ``renorm_mean_weight`` / ``renorm_stddev_weight`` (the unbiased value is
  their ratio), and from TF 2.0.0 on ``renorm_mean``, ``renorm_stddev`` unbiased plus ``moving_stddev``
  (= sqrt(moving_variance + epsilon)), which is also Keras 3's form. Both are imported into Keras 3's form.
"""
import dataclasses
import os
import re

import ml_collections
import numpy as np

# Only to read checkpoint files: the weights are assigned as numpy arrays.
import tensorflow as tf

from mtarcface_tf.model.build import backbone_of

RESNET_SCOPE = "resnet"
ARCFACE_KEY = "arcface/kernel/.ATTRIBUTES/VARIABLE_VALUE"
VARIABLE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
FRESH_LAYERS = ("mask_logits",)   # ours only: never in a reference checkpoint
NUM_STAGES = 4
MAX_LISTED = 10                   # problems named in an error message (all of them are in ``.problems``)

CONV0_POSITION = 0               # the first layer: its kernel [3, 3, C_in, C_out] reads the image channels
RENORM_MARKER = "renorm_mean"    # present at every BN position of a batch-renorm checkpoint, in both forms
# TF <= 1.14 form: zero-started moving averages and their scalar weights.
OLDER_RENORM_WEIGHTS = {"renorm_mean": "renorm_mean_weight", "renorm_stddev": "renorm_stddev_weight"}
NETWORK_FILES = {"batch_norm": "resnet.py", "batch_renorm": "resnet_batchRenorm.py"}
NEWER_FORM, OLDER_FORM = "newer", "older"
CHANNELS_NOTE = ("conv0/kernel's input-channel axis reversed: the reference network reads BGR, this one RGB "
                 "(same embeddings on the same image)")

_UNIT_BN1 = re.compile(r"stage(\d+)_unit(\d+)_bn1$")


class ReferenceImportError(ValueError):
    """A reference checkpoint that is missing, unreadable or does not fit the network (``.problems`` lists all)."""

    def __init__(self, message, problems=()):
        super().__init__(message)
        self.problems = list(problems)


@dataclasses.dataclass
class ImportReport:
    """What an import did: ``loaded`` variables, ``fresh`` ones left initialised (our names), ``problems``
    (mismatches tolerated with ``allow_partial``), whether the ArcFace centres were loaded, and notes."""
    checkpoint: str
    norm: str = "batch_norm"
    renorm_form: str = ""
    loaded: int = 0
    fresh: list = dataclasses.field(default_factory=list)
    problems: list = dataclasses.field(default_factory=list)
    arcface_loaded: bool = False
    notes: list = dataclasses.field(default_factory=list)

    def summary(self):
        """Returns a few human-readable lines."""
        lines = [f"{self.checkpoint}: {describe_network(self.norm, self.renorm_form)}; loaded {self.loaded} "
                 f"variables; ArcFace centres {'loaded' if self.arcface_loaded else 'left fresh'}"]
        if self.fresh:
            lines.append(f"left freshly initialised: {', '.join(self.fresh)}")
        lines += [f"note: {n}" for n in self.notes]
        lines += [f"mismatch: {p}" for p in self.problems]
        return "\n".join(lines)


def reference_layer_names(units=(3, 4, 14, 3)):
    """Returns the names of the reference LResNet's layers that own weights, in checkpoint order (index = K).

    ``units``: residual units per stage ((3, 4, 14, 3) is LResNet-50: 158 names). Within the first unit of a
    stage the reference's functional model lists conv2, then the shortcut conv, then bn3, then the shortcut BN.
    """
    names = ["conv0", "bn0", "prelu0"]
    for stage, count in enumerate(units, start=1):
        for unit in range(1, count + 1):
            p = f"stage{stage}_unit{unit}"
            names += [p + "_bn1", p + "_conv1", p + "_bn2", p + "_relu1", p + "_conv2"]
            names += [p + "_conv1sc", p + "_bn3", p + "_sc"] if unit == 1 else [p + "_bn3"]
    return names + ["bn1", "E_DenseLayer", "fc1"]


def describe_network(norm, renorm_form=""):
    """Returns a line naming the reference network file of ``norm`` and the renorm state's form."""
    line = f"the reference's {NETWORK_FILES[norm]} network ({norm})"
    if renorm_form == OLDER_FORM:
        line += "; renorm state in TF <= 1.14's form (renorm_*_weight), converted to moving_stddev / unbiased"
    return line


def variable_key(index, attr, root=""):
    """Returns the checkpoint key of variable ``attr`` (kernel, gamma, alpha...) of the K-th weighted layer."""
    return f"{root}{RESNET_SCOPE}/layer_with_weights-{index}/{attr}{VARIABLE_SUFFIX}"


def units_of(backbone):
    """Returns the residual units per stage of an LResNet ``backbone``, read from its layer names."""
    units = [0] * NUM_STAGES
    for layer in backbone.layers:
        match = _UNIT_BN1.match(layer.name)
        if match and int(match.group(1)) <= NUM_STAGES:
            stage, unit = int(match.group(1)), int(match.group(2))
            units[stage - 1] = max(units[stage - 1], unit)
    if not all(units):
        raise ReferenceImportError(f"{backbone.name}: not an LResNet (stages with units: {units}); the reference "
                                   f"checkpoints hold LResNet weights (config.model.backbone='lresnet')")
    return tuple(units)


def expected_layout(model):
    """Returns ``[(K, our variable path, checkpoint key, shape, variable)]``: where every backbone variable of
    ``model`` is read from in a reference checkpoint (keys without a root prefix)."""
    backbone = backbone_of(model)
    layout = []
    for index, name in enumerate(reference_layer_names(units_of(backbone))):
        try:
            layer = backbone.get_layer(name)
        except ValueError as err:
            raise ReferenceImportError(f"{backbone.name}: no layer {name!r} (reference position {index}); "
                                       f"build the network with mtarcface_tf.model.build_lresnet") from err
        for variable in layer.weights:
            layout.append((index, variable.path, variable_key(index, variable.name), tuple(variable.shape), variable))
    return layout


def _open(prefix):
    try:
        reader = tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError) as err:
        raise ReferenceImportError(f"{prefix}: not a readable TF checkpoint ({str(err).splitlines()[0]}); give the "
                                   f"prefix of the .index/.data files (e.g. /path/to/ckpt, not ckpt.index)") from err
    return reader, reader.get_variable_to_shape_map()


def _find_root(prefix, shapes):
    """Returns the key prefix above ``resnet/`` (usually ''; 'model/' when saved inside another object)."""
    first = variable_key(0, "kernel")
    roots = sorted(k[:-len(first)] for k in shapes if k.endswith(first))
    if not roots:
        raise ReferenceImportError(f"{prefix}: no '{first}' key: not a checkpoint of the reference's train_model "
                                   f"(dmonterom/face_recognition_TF2)")
    return roots[0]


def checkpoint_network(shapes, root=""):
    """Returns ``(norm, renorm_form)`` of a reference checkpoint's variable shapes: ``("batch_norm", "")`` for
    resnet.py's network, ``("batch_renorm", "newer" | "older")`` for resnet_batchRenorm.py's."""
    scope = f"{root}{RESNET_SCOPE}/"
    attrs = {key[len(scope):].split("/")[1] for key in shapes if key.startswith(scope) and key.count("/") >= 2}
    if RENORM_MARKER not in attrs:
        return "batch_norm", ""
    return "batch_renorm", OLDER_FORM if set(OLDER_RENORM_WEIGHTS.values()) & attrs else NEWER_FORM


class _Source:
    """Where one variable's value comes from: checkpoint keys and how to turn their arrays into the value."""

    def __init__(self, keys, convert=None):
        self.keys = list(keys)
        self.convert = convert or (lambda arrays: arrays[0])

    def value(self, reader):
        return self.convert([reader.get_tensor(key) for key in self.keys])


def _reverse_input_channels(arrays):
    return arrays[0][:, :, ::-1, :]


def _debiased(initial):
    """Old-form renorm moving average / its weight; ``initial`` while the weight is still 0 (never updated)."""
    def convert(arrays):
        average, weight = arrays
        return average / weight if weight > 0 else np.full_like(average, initial)
    return convert


def _source(index, attr, layer, root, form):
    """Returns the ``_Source`` of variable ``attr`` of our ``layer`` at reference position ``index``."""
    key = root + variable_key(index, attr)
    if index == CONV0_POSITION and attr == "kernel":
        return _Source([key], _reverse_input_channels)
    if form != OLDER_FORM:
        return _Source([key])
    if attr == "moving_stddev":          # the older form has none: Keras 3 keeps moving_variance = stddev^2 - eps
        epsilon = layer.epsilon
        return _Source([root + variable_key(index, "moving_variance")],
                       lambda arrays: np.sqrt(arrays[0] + epsilon).astype(arrays[0].dtype))
    if attr in OLDER_RENORM_WEIGHTS:     # Keras 3 starts them at moving_mean's 0 and moving_stddev's sqrt(1)
        initial = 0.0 if attr == "renorm_mean" else 1.0
        return _Source([key, root + variable_key(index, OLDER_RENORM_WEIGHTS[attr])], _debiased(initial))
    return _Source([key])


def _assign_backbone(model, shapes, root, report):
    """Pairs our backbone variables with their ``_Source``; returns ``[(variable, source)]`` and fills ``report``."""
    pairs, used = [], set()
    backbone = backbone_of(model)
    for index, path, _, shape, variable in expected_layout(model):
        layer = backbone.get_layer(path.split("/")[0])
        source = _source(index, variable.name, layer, root, report.renorm_form)
        used.update(source.keys)
        missing = [key for key in source.keys if key not in shapes]
        if missing:
            report.problems.append(f"{path} {list(shape)} (position {index}): no {', '.join(missing)} in the "
                                   f"checkpoint")
            report.fresh.append(path)
        elif tuple(shapes[source.keys[0]]) != shape:
            report.problems.append(f"{path} {list(shape)} (position {index}): {source.keys[0]} has shape "
                                   f"{list(shapes[source.keys[0]])}")
            report.fresh.append(path)
        else:
            pairs.append((variable, source))
    scope = f"{root}{RESNET_SCOPE}/"
    for key in sorted(shapes):
        if key.startswith(scope) and key.endswith(VARIABLE_SUFFIX) and ".OPTIMIZER_SLOT" not in key and key not in used:
            report.problems.append(f"{key} {list(shapes[key])}: no variable of our network at this position")
    return pairs


def _network_of(model):
    """Returns ``"batch_renorm"`` when ``model``'s BN layers carry renorm state, else ``"batch_norm"``."""
    return "batch_renorm" if any(getattr(layer, "renorm", False) for layer in backbone_of(model).layers) \
        else "batch_norm"


def _arcface_pair(model, shapes, root, report):
    head = getattr(model, "arcface", None)
    if head is None:
        return []
    key = root + ARCFACE_KEY
    if key not in shapes:
        report.notes.append(f"no {key} in the checkpoint: ArcFace centres left fresh")
    elif tuple(shapes[key]) != tuple(head.kernel.shape):
        report.notes.append(f"{key} has shape {list(shapes[key])}, our centres {list(head.kernel.shape)} (another "
                            f"class count): ArcFace centres left fresh")
    else:
        return [(head.kernel, _Source([key]))]
    report.fresh.append(head.kernel.path)
    return []


def load_reference_weights(model, prefix, allow_partial=False):
    """Loads a reference checkpoint into ``model`` after checking every variable.

    Args:
      model: ``build_lresnet(...)`` / ``build_lresnet50()`` or an ``MTArcFace`` network with an LResNet backbone,
        of the reference's architecture (any units per stage, as long as the checkpoint has the same).
      prefix: checkpoint prefix (the path without ``.index``).
      allow_partial: when True, mismatched or missing variables keep their initial values (listed in the report);
        when False (default) any mismatch raises and nothing is assigned.
    Returns:
      ``ImportReport``. The mask head is always fresh; the ArcFace centres load when ``arcface/kernel`` has our
      shape [embedding_size, num_classes], else they stay fresh with a note. conv0's kernel is converted from the
      reference's BGR input to our RGB input, and older-form renorm state to Keras 3's (see the module docstring).
    Raises:
      ``ReferenceImportError`` naming the checkpoint and the mismatched keys (all in ``.problems``).
    """
    reader, shapes = _open(prefix)
    root = _find_root(prefix, shapes)
    norm, form = checkpoint_network(shapes, root)
    report = ImportReport(checkpoint=prefix, norm=norm, renorm_form=form)
    pairs = _assign_backbone(model, shapes, root, report)
    if report.problems and not allow_partial:
        listed = "; ".join(report.problems[:MAX_LISTED])
        more = f"; ... {len(report.problems) - MAX_LISTED} more" if len(report.problems) > MAX_LISTED else ""
        hint = "" if norm == _network_of(model) else f" The checkpoint holds {describe_network(norm)}: build " \
            f"the network with norm='{norm}' (config.model.norm)."
        raise ReferenceImportError(
            f"{prefix}: {len(report.problems)} variables do not fit the network: {listed}{more}.{hint} Build the "
            f"reference's architecture (LResNet-50, 112x112, 512-d) or pass allow_partial=True / --allow_partial "
            f"to leave them freshly initialised", report.problems)
    arcface = _arcface_pair(model, shapes, root, report)
    for variable, source in pairs + arcface:
        variable.assign(source.value(reader))   # numpy arrays: works under any Keras backend
    report.notes.append(CHANNELS_NOTE)
    report.loaded = len(pairs) + len(arcface)
    report.arcface_loaded = bool(arcface)
    backbone = backbone_of(model)
    for name in FRESH_LAYERS:
        if any(layer.name == name for layer in backbone.layers):
            report.fresh += [v.path for v in backbone.get_layer(name).weights]
    return report


def checkpoint_num_classes(prefix):
    """Returns the class count of the checkpoint's ArcFace centres (``arcface/kernel`` [D, C]), or None."""
    _, shapes = _open(prefix)
    root = _find_root(prefix, shapes)
    shape = shapes.get(root + ARCFACE_KEY)
    return int(shape[1]) if shape and len(shape) == 2 else None


def _record(config, prefix, report):
    """Writes what the import did into ``config.reference_import`` (saved in the workdir's config.json)."""
    with config.unlocked():   # configs from --config files are locked against new keys
        config.reference_import = ml_collections.ConfigDict({
            "checkpoint": os.path.abspath(prefix),
            "network": describe_network(report.norm, report.renorm_form),
            "input_channels": CHANNELS_NOTE,
        })


def import_reference(prefix, config, num_classes=None, allow_partial=False):
    """Builds the MTArcFace network of ``config`` and loads a reference checkpoint into it.

    Args:
      prefix: the reference checkpoint prefix.
      config: a full config (``configs/finetune_mtarcface.py``: LResNet-50, 112x112, 512-d, mask head); it is
        updated in place with the class count used.
      num_classes: ArcFace classes of the network; None takes the checkpoint's (85,742 for MS1MV2), else
        ``config.num_classes``. The centres load only when it equals the checkpoint's.
      allow_partial: see ``load_reference_weights``.
    Returns:
      ``(model, report)``: the ``MTArcFace`` network with the reference's weights, and the ``ImportReport``.
      ``config.model.norm`` is set to the network the checkpoint holds, and ``config.reference_import`` says what
      was imported and converted.
    """
    from mtarcface_tf.model.build import build_mtarcface

    _, shapes = _open(prefix)
    config.model.norm, _ = checkpoint_network(shapes, _find_root(prefix, shapes))
    if num_classes is None:
        num_classes = checkpoint_num_classes(prefix) or config.num_classes
    config.num_classes = int(num_classes)
    model = build_mtarcface(config.num_classes, config)
    report = load_reference_weights(model, prefix, allow_partial=allow_partial)
    _record(config, prefix, report)
    return model, report
