"""A loop transcription of insightface's recognition/_evaluation_/ijb/ijb_1n.py, the reference that
tests/test_ijb_1n.py holds mtarcface_tf.eval.ijb_1n against. Not a test module.

Written from the script, loop for loop: read_template_subject_id_list (np.loadtxt, header skipped, comma-delimited),
image2template_feature over the chosen templates (np.where per template, per media the face itself or the mean, the
subject of each template's first listed row), gen_mask (the one gallery position of each probe's subject), and
evaluation (full argsort of the similarity matrix, top-1/5/10 by loops, the mated scores set to -2, heapq.nlargest
over the rest, threshold = the ceil(query_num * far)-th largest, recall = mated scores strictly above it). The
script prints its figures; here ``evaluation`` returns them.
"""
import heapq
import math

import numpy as np

FARS = [0.01, 0.1]


def read_template_subject_id_list(path):
    ijb_meta = np.loadtxt(path, dtype=str, skiprows=1, delimiter=",")
    templates = ijb_meta[:, 0].astype(int)
    subject_ids = ijb_meta[:, 1].astype(int)
    return templates, subject_ids


def image2template_feature(img_feats, templates, medias, choose_templates, choose_ids):
    unique_templates, indices = np.unique(choose_templates, return_index=True)
    unique_subjectids = choose_ids[indices]
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
                media_norm_feats += [np.mean(face_norm_feats[ind_m], 0, keepdims=True)]
        media_norm_feats = np.array(media_norm_feats)
        template_feats[count_template] = np.sum(media_norm_feats, 0)
    template_norm_feats = template_feats / np.sqrt(np.sum(template_feats ** 2, -1, keepdims=True))
    return template_norm_feats, unique_templates, unique_subjectids


def gen_mask(query_ids, reg_ids):
    mask = []
    for query_id in query_ids:
        pos = [i for i, x in enumerate(reg_ids) if query_id == x]
        if len(pos) != 1:
            raise RuntimeError(f"RegIdsError with id = {query_id}, duplicate = {len(pos)}")
        mask.append(pos[0])
    return mask


def evaluation(query_feats, gallery_feats, mask):
    """Returns {"top1", "top5", "top10": accuracy, far: (recall, threshold) for far in FARS}."""
    out = {}
    query_num = query_feats.shape[0]
    similarity = np.dot(query_feats, gallery_feats.T)
    top_inds = np.argsort(-similarity)
    correct_num = 0
    for i in range(query_num):
        j = top_inds[i, 0]
        if j == mask[i]:
            correct_num += 1
    out["top1"] = correct_num / query_num
    correct_num = 0
    for i in range(query_num):
        j = top_inds[i, 0:5]
        if mask[i] in j:
            correct_num += 1
    out["top5"] = correct_num / query_num
    correct_num = 0
    for i in range(query_num):
        j = top_inds[i, 0:10]
        if mask[i] in j:
            correct_num += 1
    out["top10"] = correct_num / query_num
    required_topk = [math.ceil(query_num * x) for x in FARS]
    top_sims = similarity
    pos_sims = []
    for i in range(query_num):
        gt = mask[i]
        pos_sims.append(top_sims[i, gt])
        top_sims[i, gt] = -2.0
    pos_sims = np.array(pos_sims)
    neg_sims = top_sims[np.where(top_sims > -2.0)]
    neg_sims = heapq.nlargest(max(required_topk), neg_sims)
    for far, pos in zip(FARS, required_topk):
        th = neg_sims[pos - 1]
        recall = np.sum(pos_sims > th) / query_num
        out[far] = (recall, th)
    return out


def run_1n(img_input_feats, total_templates, total_medias, gallery_lists, probe_list):
    """The script's main after the weighting: gallery = the concatenated lists, probes = probe_mixed."""
    gallery_templates = np.concatenate([read_template_subject_id_list(p)[0] for p in gallery_lists])
    gallery_subject_ids = np.concatenate([read_template_subject_id_list(p)[1] for p in gallery_lists])
    gallery_feats, _, gallery_ids = image2template_feature(img_input_feats, total_templates, total_medias,
                                                           gallery_templates, gallery_subject_ids)
    probe_templates, probe_subject_ids = read_template_subject_id_list(probe_list)
    probe_feats, _, probe_ids = image2template_feature(img_input_feats, total_templates, total_medias,
                                                       probe_templates, probe_subject_ids)
    mask = gen_mask(probe_ids, gallery_ids)
    return evaluation(probe_feats, gallery_feats, mask)
