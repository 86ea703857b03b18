"""A loop transcription of insightface's recognition/arcface_torch/eval_ijbc.py (steps 2-5), the reference that
tests/test_ijb.py and bench/ijb.py hold mtarcface_tf.eval.ijb against. Not a test module.

Written from the script's logic, loop for loop: feature extraction per face (skimage similarity onto the template
shifted by 8 px, cv2.warpAffine on the BGR image, BGR->RGB, the mirror next to it), flip test "F2" (the two halves of
the [N, 2D] features added), norm score "N1", detector score "D1", image2template_feature (np.where per template, per
media: the face itself or the mean), verification (template2id lookup table), the TPR@FPR table (min over
(|fpr - x|, index) of the flipped ROC).
"""
import os

import cv2
import numpy as np
import sklearn.preprocessing
from skimage import transform as trans
from sklearn.metrics import roc_curve

X_LABELS = [10 ** -6, 10 ** -5, 10 ** -4, 10 ** -3, 10 ** -2, 10 ** -1]


def _template_src(image_size):
    src = np.array([[30.2946, 51.6963], [65.5318, 51.5014], [48.0252, 71.7366], [33.5493, 92.3655],
                    [62.7299, 92.2041]], dtype=np.float32)
    src[:, 0] += 8.0
    return src * image_size / 112.0


def read_lists(root, target):
    """The three meta files as the script reads them (its pandas calls, as plain splits)."""
    meta = os.path.join(root, "meta")
    face_rows = [line.split(" ") for line in open(os.path.join(meta, f"{target.lower()}_face_tid_mid.txt"))]
    templates = np.array([int(r[1]) for r in face_rows])
    medias = np.array([int(r[2]) for r in face_rows])
    pair_rows = [line.split(" ") for line in open(os.path.join(meta, f"{target.lower()}_template_pair_label.txt"))]
    p1 = np.array([int(r[0]) for r in pair_rows])
    p2 = np.array([int(r[1]) for r in pair_rows])
    label = np.array([int(r[2]) for r in pair_rows])
    files = open(os.path.join(meta, f"{target.lower()}_name_5pts_score.txt")).readlines()
    return templates, medias, p1, p2, label, files


def aligned_pair(root, line, image_size=112):
    """Embedding.get: the aligned RGB face and its mirror, uint8 [2, S, S, 3] (NHWC here, not the script's NCHW)."""
    name_lmk_score = line.strip().split(" ")
    rimg = cv2.imread(os.path.join(root, "loose_crop", name_lmk_score[0]))
    landmark = np.array([float(x) for x in name_lmk_score[1:-1]], dtype=np.float32).reshape((5, 2))
    tform = trans.SimilarityTransform()
    tform.estimate(landmark, _template_src(image_size))
    img = cv2.warpAffine(rimg, tform.params[0:2, :], (image_size, image_size), borderValue=0.0)
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return np.stack([img, np.fliplr(img)])


def get_image_feature(root, files, embed, image_size=112, mask=None):
    """Features [N, 2D] (face, mirror) and faceness scores; ``mask``: optional callable on the aligned faces."""
    faces = np.stack([aligned_pair(root, line, image_size)[0] for line in files])
    if mask is not None:
        faces = mask(faces)
    plain = np.asarray(embed(faces), np.float32)
    mirrored = np.asarray(embed(np.ascontiguousarray(faces[:, :, ::-1])), np.float32)
    scores = np.array([line.strip().split(" ")[-1] for line in files]).astype(np.float32)
    return np.concatenate([plain, mirrored], axis=1), scores


def combine(img_feats, faceness_scores, use_flip_test=True, use_norm_score=True, use_detector_score=True):
    if use_flip_test:
        img_input_feats = img_feats[:, 0:img_feats.shape[1] // 2] + img_feats[:, img_feats.shape[1] // 2:]
    else:
        img_input_feats = img_feats[:, 0:img_feats.shape[1] // 2]
    if not use_norm_score:
        img_input_feats = img_input_feats / np.sqrt(np.sum(img_input_feats ** 2, -1, keepdims=True))
    if use_detector_score:
        img_input_feats = img_input_feats * faceness_scores[:, np.newaxis]
    return img_input_feats


def image2template_feature(img_feats, templates, medias):
    unique_templates = np.unique(templates)
    template_feats = np.zeros((len(unique_templates), img_feats.shape[1]))
    for count_template, uqt in enumerate(unique_templates):
        (ind_t,) = np.where(templates == uqt)
        face_norm_feats = img_feats[ind_t]
        face_medias = medias[ind_t]
        unique_medias, unique_media_counts = np.unique(face_medias, return_counts=True)
        media_norm_feats = []
        for u, ct in zip(unique_medias, unique_media_counts):
            (ind_m,) = np.where(face_medias == u)
            if ct == 1:
                media_norm_feats += [face_norm_feats[ind_m]]
            else:
                media_norm_feats += [np.mean(face_norm_feats[ind_m], axis=0, keepdims=True)]
        media_norm_feats = np.array(media_norm_feats)
        template_feats[count_template] = np.sum(media_norm_feats, axis=0)
    return sklearn.preprocessing.normalize(template_feats), unique_templates


def verification(feats1, feats2, unique_templates, p1, p2):
    """The script's verification; ``feats2`` is the probe side (the same array for the clean protocol)."""
    template2id = np.zeros((max(unique_templates) + 1, 1), dtype=int)
    for count_template, uqt in enumerate(unique_templates):
        template2id[uqt] = count_template
    score = np.zeros((len(p1),))
    total_pairs = np.array(range(len(p1)))
    batchsize = 100000
    for s in [total_pairs[i:i + batchsize] for i in range(0, len(p1), batchsize)]:
        feat1 = feats1[template2id[p1[s]]]
        feat2 = feats2[template2id[p2[s]]]
        score[s] = np.sum(feat1 * feat2, -1).flatten()
    return score


def tpr_fpr_row(label, score):
    fpr, tpr, _ = roc_curve(label, score)
    fpr = np.flipud(fpr)
    tpr = np.flipud(tpr)
    row = []
    for fpr_iter in np.arange(len(X_LABELS)):
        _, min_index = min(list(zip(abs(fpr - X_LABELS[fpr_iter]), range(len(fpr)))))
        row.append(tpr[min_index])
    return row
