"""Loads the reference's published TF2 checkpoints (dmonterom/face_recognition_TF2) into our LResNet networks.

The reference saves its subclassed ``train_model`` with ``save_weights``: an object-based checkpoint keyed by
POSITION, ``resnet/layer_with_weights-K/<attr>/.ATTRIBUTES/VARIABLE_VALUE`` (K counts the layers owning weights in
the order of its functional ResNet's ``layers``) plus ``arcface/kernel`` [512, num_classes]. No layer names are in the
file, so the import rebuilds the reference's order from the layer names of ``resnet.py`` (``reference_layer_names``),
finds each of those layers in our network by name, and checks every variable's shape before assigning anything.
Our mask head has no counterpart in the reference and stays freshly initialised.
"""
import dataclasses
import re

# Only to read checkpoint files: the weights are assigned as numpy arrays.
import tensorflow as tf

RESNET_SCOPE = "resnet"
ARCFACE_KEY = "arcface/kernel/.ATTRIBUTES/VARIABLE_VALUE"
VARIABLE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
FRESH_LAYERS = ("mask_logits",)   # ours only: never in a reference checkpoint
NUM_STAGES = 4
MAX_LISTED = 10                   # problems named in an error message (all of them are in ``.problems``)

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
    loaded: int = 0
    fresh: list = dataclasses.field(default_factory=list)
    problems: list = dataclasses.field(default_factory=list)
    arcface_loaded: bool = False
    notes: list = dataclasses.field(default_factory=list)

    def summary(self):
        """Returns a few human-readable lines."""
        lines = [f"{self.checkpoint}: loaded {self.loaded} variables; ArcFace centres "
                 f"{'loaded' if self.arcface_loaded else 'left fresh'}"]
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


def variable_key(index, attr, root=""):
    """Returns the checkpoint key of variable ``attr`` (kernel, gamma, alpha...) of the K-th weighted layer."""
    return f"{root}{RESNET_SCOPE}/layer_with_weights-{index}/{attr}{VARIABLE_SUFFIX}"


def backbone_of(model):
    """Returns the functional LResNet inside ``model`` (an ``MTArcFace`` network or a ``build_lresnet`` model)."""
    return getattr(model, "backbone", model)


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


def _assign_backbone(model, shapes, root, report):
    """Pairs our backbone variables with checkpoint keys; returns ``[(variable, key)]`` and fills ``report``."""
    pairs, used = [], set()
    for index, path, key, shape, variable in expected_layout(model):
        key = root + key
        used.add(key)
        if key not in shapes:
            report.problems.append(f"{path} {list(shape)} (position {index}): no {key} in the checkpoint")
            report.fresh.append(path)
        elif tuple(shapes[key]) != shape:
            report.problems.append(f"{path} {list(shape)} (position {index}): {key} has shape {list(shapes[key])}")
            report.fresh.append(path)
        else:
            pairs.append((variable, key))
    scope = f"{root}{RESNET_SCOPE}/"
    for key in sorted(shapes):
        if key.startswith(scope) and key.endswith(VARIABLE_SUFFIX) and ".OPTIMIZER_SLOT" not in key and key not in used:
            report.problems.append(f"{key} {list(shapes[key])}: no variable of our network at this position")
    return pairs


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
        return [(head.kernel, key)]
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
      shape [embedding_size, num_classes], else they stay fresh with a note.
    Raises:
      ``ReferenceImportError`` naming the checkpoint and the mismatched keys (all in ``.problems``).
    """
    reader, shapes = _open(prefix)
    root = _find_root(prefix, shapes)
    report = ImportReport(checkpoint=prefix)
    pairs = _assign_backbone(model, shapes, root, report)
    if report.problems and not allow_partial:
        listed = "; ".join(report.problems[:MAX_LISTED])
        more = f"; ... {len(report.problems) - MAX_LISTED} more" if len(report.problems) > MAX_LISTED else ""
        raise ReferenceImportError(
            f"{prefix}: {len(report.problems)} variables do not fit the network: {listed}{more}. Build the "
            f"reference's architecture (LResNet-50, 112x112, 512-d) or pass allow_partial=True / --allow_partial "
            f"to leave them freshly initialised", report.problems)
    arcface = _arcface_pair(model, shapes, root, report)
    for variable, key in pairs + arcface:
        variable.assign(reader.get_tensor(key))   # numpy arrays: works under any Keras backend
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
    """
    from mtarcface_tf.model.build import build_mtarcface

    if num_classes is None:
        num_classes = checkpoint_num_classes(prefix) or config.num_classes
    config.num_classes = int(num_classes)
    model = build_mtarcface(config.num_classes, config)
    return model, load_reference_weights(model, prefix, allow_partial=allow_partial)
