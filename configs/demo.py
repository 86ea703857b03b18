"""The configs of the one-command demo (`make demo`, tools/demo.py): ArcFace and MTArcFace on SynthFaces side by side,
optionally with the ArcFace+focal and triplet baselines on the same data; `--quick` shrinks data and steps.

Not a single-run config (tools/train.py takes configs/demo_mtarcface.py or configs/demo_arcface.py); tools/demo.py
calls ``get_configs``.
"""
from mtarcface_tf.configs import arcface_focal, demo_arcface, demo_mtarcface, triplet
from mtarcface_tf.data.masked_pairs import VARIANTS

MODELS = {"ArcFace": demo_arcface, "MTArcFace": demo_mtarcface}
BASELINES = {"ArcFace+focal": arcface_focal, "Triplet": triplet}
# --quick: a smoke run whose numbers mean little, except that MTArcFace's accuracy drop under masks is already
# smaller than ArcFace's (bench/quick_demo.py measures by how much, over several runs).
# The recognition step: people never seen in training enrolled from unmasked photos and identified from masked
# ones. Each photo is a SynthFaces face rendered at 112 pixels, placed in a scene of ``scene_size`` pixels
# (face about ``face_fraction`` of its side: RetinaFace, tuned on real photos, finds these drawn faces only when
# they are large, about 200 pixels or more) and found there by the default detector.
# The demo's 3,000 pairs hold 1,500 different-identity pairs: TAR@FAR=1e-3 would rest on the top one or two impostor
# scores and move by tens of points between runs, TAR@FAR=1e-2 rests on about fifteen.
DEMO_FAR = 1e-2
RECOGNITION = dict(people=20, enrol_photos=3, probe_photos=3, scene_size=512, face_fraction=0.5)
QUICK = dict(steps=80, identities=60, images_per_identity=12, eval_identities=30, eval_pairs=1000)


def get_configs(quick=False, all_baselines=False):
    """Returns {model name: config} of the two demo models (with ``all_baselines`` also ArcFace+focal and triplet,
    on the same data, network size, steps and batch); ``quick`` shrinks data and steps for a smoke run. The demo
    scores every variant of the pairs (combined too) after training, with each config's evals."""
    configs = {name: module.get_config() for name, module in MODELS.items()}
    for config in configs.values():
        config.evals.verification.far = DEMO_FAR
    if all_baselines:
        reference = configs["MTArcFace"]
        for name, module in BASELINES.items():
            config = module.get_config()
            config.data.synthetic = reference.data.synthetic.copy_and_resolve_references()
            config.num_classes = reference.num_classes
            config.num_steps = reference.num_steps
            if config.data.identities_per_batch:   # keep K images per identity at the demo's batch size
                images_per_identity = config.batch_size // config.data.identities_per_batch
                config.data.identities_per_batch = reference.batch_size // images_per_identity
            config.batch_size = reference.batch_size
            config.evals.verification.far = DEMO_FAR
            configs[name] = config
    if quick:
        for config in configs.values():
            config.num_steps = QUICK["steps"]
            config.loss.margin_warmup_steps = QUICK["steps"] // 5
            for entry in config.evals.values():
                entry.every = QUICK["steps"]
            config.checkpoint_every = QUICK["steps"]
            synthetic = config.data.synthetic
            synthetic.identities = QUICK["identities"]
            synthetic.images_per_identity = QUICK["images_per_identity"]
            synthetic.eval_identities = QUICK["eval_identities"]
            synthetic.eval_pairs = QUICK["eval_pairs"]
            config.num_classes = synthetic.identities
    for config in configs.values():
        config.evals.verification.variants = VARIANTS
    return configs
