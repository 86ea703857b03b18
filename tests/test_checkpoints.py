"""Workdir configs: a config.json written before the normalization keys existed still resumes (as plain BN)."""
import json

import pytest

from mtarcface_tf.configs import common
from mtarcface_tf.train.checkpoints import CONFIG_FILE, CheckpointError, check_and_save_config, config_to_json


def _write_config_without_norm_keys(config, workdir):
    old = json.loads(config_to_json(config))
    for key in ("norm", "renorm_clipping", "renorm_momentum"):
        del old["model"][key]
    (workdir / CONFIG_FILE).write_text(json.dumps(old))


def test_config_from_before_the_norm_keys_is_the_plain_bn_network(tmp_path):
    config = common.base_config()
    _write_config_without_norm_keys(config, tmp_path)
    check_and_save_config(config, str(tmp_path))                 # batch_norm: the same network
    assert json.loads((tmp_path / CONFIG_FILE).read_text())["model"]["norm"] == "batch_norm"
    _write_config_without_norm_keys(config, tmp_path)
    config.model.norm = "batch_renorm"
    with pytest.raises(CheckpointError, match=r"model.norm: 'batch_norm' -> 'batch_renorm'"):
        check_and_save_config(config, str(tmp_path))
