"""The reference's network re-created in tf_keras (Keras 2), the Keras its checkpoints were written with.

Run as a script in a subprocess (``python tests/support/tfkeras_reference.py JOB.json``): it sets TF_USE_LEGACY_KERAS=1
before TensorFlow loads, so this process has Keras 2 while the test process has Keras 3. Our own transcription of
dmonterom/face_recognition_TF2's ``resnet.py`` (plain BN) and ``resnet_batchRenorm.py`` (batch renorm) and of its
``arcface.py`` layer and ``train_model`` (attributes ``resnet``, ``arcface``), at any units per stage / width / input
size so that tests stay small; the preprocessing is its evaluation.py's (RGB -> BGR, (x - 127.5) * 0.0078125, flip
test by summing the embeddings of the image and its mirror). It shares no code with mtarcface_tf.

JOB.json: {"output": NPZ path, "tasks": [{"task": NAME, ...}, ...]}; every task writes arrays prefixed ``NAME/``.
"""
import json
import os
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

L2 = 5e-4
RENORM = {"renorm": True, "renorm_clipping": {"rmax": 3, "rmin": 0.3333, "dmax": 5}, "renorm_momentum": 0.9}
FILTERS = (64, 64, 128, 256, 512)


def _l2():
    return keras.regularizers.l2(L2)


def reference_bn(name, renorm, scale=True):
    """BatchNormalization as the reference writes it (resnet.py; resnet_batchRenorm.py when ``renorm``)."""
    kwargs = {"axis": -1, "scale": scale, "momentum": 0.9, "epsilon": 2e-5, "name": name}
    if scale:
        kwargs["gamma_regularizer"] = _l2()
    if renorm:
        kwargs.update(RENORM, beta_regularizer=_l2())
    return keras.layers.BatchNormalization(**kwargs)


def _conv(filters, size, stride, name):
    return keras.layers.Conv2D(filters, (size, size), strides=stride, padding="valid",
                               kernel_initializer="glorot_normal", use_bias=False, kernel_regularizer=_l2(),
                               name=name)


def _unit(x, filters, stride, dim_match, name, renorm):
    y = reference_bn(name + "_bn1", renorm)(x)
    y = keras.layers.ZeroPadding2D(padding=(1, 1), name=name + "_conv1_pad")(y)
    y = _conv(filters, 3, (1, 1), name + "_conv1")(y)
    y = reference_bn(name + "_bn2", renorm)(y)
    y = keras.layers.PReLU(name=name + "_relu1", alpha_regularizer=_l2())(y)
    y = keras.layers.ZeroPadding2D(padding=(1, 1), name=name + "_conv2_pad")(y)
    y = _conv(filters, 3, stride, name + "_conv2")(y)
    y = reference_bn(name + "_bn3", renorm)(y)
    if dim_match:
        shortcut = x
    else:
        shortcut = _conv(filters, 1, stride, name + "_conv1sc")(x)
        shortcut = reference_bn(name + "_sc", renorm)(shortcut)
    return y + shortcut


def reference_resnet(renorm, units=(3, 4, 14, 3), width=1.0, size=112, embedding=512):
    """The reference's functional ResNet50 (get_fc1 included): BGR-normalized image -> embedding."""
    filters = [max(1, int(round(f * width))) for f in FILTERS]
    image = keras.layers.Input(shape=[size, size, 3])
    x = keras.layers.ZeroPadding2D(padding=(1, 1), name="conv0_pad")(image)
    x = _conv(filters[0], 3, (1, 1), "conv0")(x)
    x = reference_bn("bn0", renorm)(x)
    x = keras.layers.PReLU(name="prelu0", alpha_regularizer=_l2())(x)
    for stage, count in enumerate(units):
        x = _unit(x, filters[stage + 1], (2, 2), False, f"stage{stage + 1}_unit1", renorm)
        for j in range(count - 1):
            x = _unit(x, filters[stage + 1], (1, 1), True, f"stage{stage + 1}_unit{j + 2}", renorm)
    shape = x.shape
    x = reference_bn("bn1", renorm)(x)
    x = keras.layers.Dropout(0.4)(x)
    x = keras.layers.Reshape([shape[1] * shape[2] * shape[3]], name="reshapelayer")(x)
    x = keras.layers.Dense(embedding, name="E_DenseLayer", kernel_initializer="glorot_normal",
                           kernel_regularizer=_l2(), bias_regularizer=_l2())(x)
    x = reference_bn("fc1", renorm, scale=False)(x)
    return keras.models.Model(image, x, name="resnet50")


class ArcFaceLayer(keras.layers.Layer):
    """The reference's ArcFace layer: only its ``kernel`` [embedding, classes] matters to a checkpoint."""

    def __init__(self, classes):
        super().__init__()
        self.classes = classes

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", shape=(input_shape[-1], self.classes),
                                      initializer="glorot_normal", regularizer=_l2(), trainable=True)

    def call(self, embedding, labels):
        del labels
        return tf.matmul(tf.nn.l2_normalize(embedding, 1), tf.nn.l2_normalize(self.kernel, 0))


class TrainModel(keras.Model):
    """Shaped like the reference's ``train_model``: ``resnet`` then ``arcface``, saved with ``save_weights``."""

    def __init__(self, resnet, classes):
        super().__init__()
        self.resnet = resnet
        self.arcface = ArcFaceLayer(classes)

    def call(self, x, y):
        return self.arcface(self.resnet(x), y)


def reference_input(rgb_uint8):
    """evaluation.py's preprocessing: RGB -> BGR, (x - 127.5) * 0.0078125, float32."""
    bgr = np.asarray(rgb_uint8, np.float32)[..., ::-1]
    return ((bgr - 127.5) * 0.0078125).astype(np.float32)


def _weighted(resnet):
    return [layer for layer in resnet.layers if layer.weights]


def _randomize(resnet, seed, renorm_batches):
    """Random gammas / betas / alphas, then training-mode passes so the moving (and renorm) statistics move."""
    rng = np.random.default_rng(seed)
    for layer in _weighted(resnet):
        for variable in layer.trainable_weights:
            name = variable.name.split("/")[-1].split(":")[0]
            if name == "gamma":
                variable.assign(rng.uniform(0.5, 1.5, variable.shape).astype(np.float32))
            elif name in ("beta", "bias"):
                variable.assign(rng.normal(0, 0.2, variable.shape).astype(np.float32))
            elif name == "alpha":
                variable.assign(rng.uniform(0, 0.3, variable.shape).astype(np.float32))
    size = resnet.input_shape[1]
    for _ in range(renorm_batches):
        batch = rng.uniform(0, 255, (8, size, size, 3)).astype(np.uint8)
        resnet(reference_input(batch), training=True)


def _bn_state(resnet, prefix):
    out = {}
    for layer in resnet.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            for variable in layer.weights:
                name = variable.name.split("/")[-1].split(":")[0]
                out[f"{prefix}/{layer.name}/{name}"] = variable.numpy()
    return out


def _older_form_checkpoint(resnet, arcface_kernel, prefix, weights):
    """Writes ``resnet`` as TF <= 1.14's BatchNormalization kept renorm state (zero-started averages + scalar
    ``renorm_*_weight``, no ``moving_stddev``) under the reference's keys, with tf.train.Checkpoint."""
    root = tf.Module()
    for index, layer in enumerate(_weighted(resnet)):
        node = tf.Module()
        for variable in layer.weights:
            name = variable.name.split("/")[-1].split(":")[0]
            value = variable.numpy()
            if name == "moving_stddev":
                continue
            if name in weights:
                value = value * weights[name]
                setattr(node, name + "_weight", tf.Variable(np.float32(weights[name])))
            setattr(node, name, tf.Variable(value))
        setattr(root, f"layer_with_weights-{index}", node)
    head = tf.Module()
    head.kernel = tf.Variable(arcface_kernel)
    return tf.train.Checkpoint(resnet=root, arcface=head).write(prefix)


def task_checkpoint(job):
    """Builds a random reference network, saves it like the reference, and embeds ``faces`` (RGB uint8)."""
    tf.random.set_seed(job["seed"])
    resnet = reference_resnet(job["renorm"], tuple(job["units"]), job["width"], job["size"], job["embedding"])
    model = TrainModel(resnet, job["classes"])
    faces = np.load(job["faces"])
    model(reference_input(faces[:2]), tf.constant([0, 1]))
    _randomize(resnet, job["seed"], job["renorm_batches"])
    model.save_weights(job["prefix"])
    out = {"embedding": resnet(reference_input(faces), training=False).numpy(),
           "arcface": model.arcface.kernel.numpy()}
    out.update(_bn_state(resnet, "state"))
    if job.get("older_prefix"):
        _older_form_checkpoint(resnet, out["arcface"], job["older_prefix"], job["older_weights"])
    # One more training-mode pass (what fine-tuning does next): the statistics it leaves in every BN layer.
    resnet(reference_input(faces), training=True)
    out.update(_bn_state(resnet, "after_step"))
    return out


def _calculate_accuracy(threshold, dist, issame):
    predict = dist < threshold
    tp = np.sum(predict & issame)
    tn = np.sum(~predict & ~issame)
    return float(tp + tn) / dist.size


def reference_accuracy(embeddings, issame, folds=10):
    """evaluation.py's calculate_roc accuracy: squared L2 distance, thresholds 0..4 step 0.01, KFold unshuffled."""
    thresholds = np.arange(0, 4, 0.01)
    dist = np.sum(np.square(embeddings[0::2] - embeddings[1::2]), 1)
    indices = np.arange(len(issame))
    accuracy = []
    for test in np.array_split(indices, folds):
        train = np.setdiff1d(indices, test)
        best = thresholds[int(np.argmax([_calculate_accuracy(t, dist[train], issame[train]) for t in thresholds]))]
        accuracy.append(_calculate_accuracy(best, dist[test], issame[test]))
    return float(np.mean(accuracy))


def task_bin_accuracy(job):
    """evaluation.py on a .bin: load_weights into a fresh train_model, BGR, flip test, 10-fold accuracy."""
    import pickle

    import cv2
    resnet = reference_resnet(job["renorm"], tuple(job["units"]), job["width"], job["size"], job["embedding"])
    model = TrainModel(resnet, job["classes"])
    model.load_weights(job["prefix"]).expect_partial()
    with open(job["bin"], "rb") as f:
        bins, issame = pickle.load(f, encoding="bytes")
    rgb = np.stack([cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)[..., ::-1] for b in bins])
    embeddings = sum(resnet(reference_input(images), training=False).numpy()
                     for images in (rgb, rgb[:, :, ::-1]))
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    return {"accuracy": np.float64(reference_accuracy(embeddings, np.asarray(issame, bool)))}


def task_layout(job):
    """Weighted layers of the full-size network in order, their variables' shapes, and the trainable count."""
    resnet = reference_resnet(job["renorm"])
    rows = [f"{layer.name}/{v.name.split('/')[-1].split(':')[0]}:{list(v.shape)}"
            for layer in _weighted(resnet) for v in layer.weights]
    trainable = sum(int(np.prod(v.shape)) for v in resnet.trainable_weights)
    return {"rows": np.array(rows), "trainable": np.int64(trainable), "losses": np.int64(len(resnet.losses))}


def task_renorm_parity(job):
    """tf_keras BatchNormalization(renorm, the reference's settings): SGD steps on ``data`` [steps, B, H, W, C]."""
    data = np.load(job["data"])
    layer = reference_bn("bn", renorm=True)
    layer.build(data.shape[1:])
    rng = np.random.default_rng(0)
    layer.gamma.assign(rng.uniform(0.5, 1.5, layer.gamma.shape).astype(np.float32))
    layer.beta.assign(rng.normal(0, 0.5, layer.beta.shape).astype(np.float32))
    weights = np.load(job["loss_weights"])
    out = {}
    for step, x in enumerate(data[:-1]):
        with tf.GradientTape() as tape:
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * weights)
        grads = tape.gradient(loss, [layer.gamma, layer.beta])
        for variable, grad in zip([layer.gamma, layer.beta], grads):
            variable.assign_sub(job["lr"] * grad)
        out[f"output_{step}"] = y.numpy()
    for variable in layer.weights:
        out[variable.name.split("/")[-1].split(":")[0]] = variable.numpy()
    out["inference"] = layer(data[-1], training=False).numpy()
    return out


TASKS = {"checkpoint": task_checkpoint, "bin_accuracy": task_bin_accuracy, "layout": task_layout,
         "renorm_parity": task_renorm_parity}


def main(path):
    with open(path, encoding="utf-8") as f:
        job = json.load(f)
    arrays = {}
    for task in job["tasks"]:
        for key, value in TASKS[task["task"]](task).items():
            arrays[f"{task['name']}/{key}"] = value
    np.savez(job["output"], **arrays)


if __name__ == "__main__":
    main(sys.argv[1])
