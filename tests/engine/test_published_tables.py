"""Values of recipes/_published.yaml checked against the upstream configurations they come from."""

from __future__ import annotations

from sakd.config import published_weights


def test_sakd_routing_ce_weight_is_two_for_at_vid_and_rkd_on_cifar100():
    # zju-vipa/spot-adaptive-pytorch configs/cifar-100/seed-1029/<distiller>/*.yml,
    # kd.loss_weights.classify_weight: 2.0 in every at/, vid/ and rkd/ config, 1.0 for the others.
    table = published_weights()["sakd"]
    gamma_two = {name for name, row in table.items() if row["routing_ce_weight"] == 2}
    assert gamma_two == {"at", "vid", "rkd"}


def test_ls_kd_weights_are_the_authors_cfg():
    # sunshangquan/logit-standardization-KD mdistiller/engine/cfg.py: CFG.KD.LOSS.CE_WEIGHT = 0.1,
    # CFG.KD.LOSS.KD_WEIGHT = 9 (tools/train.py --kd-weight 9 rewrites the KD weight only).
    row = published_weights()["ls"]["kd"]
    assert (row["ce_weight"], row["loss_weight"], row["kd_weight"]) == (0.1, 9, 0.0)
    # mdistiller/engine/cfg.py CFG.DKD.CE_WEIGHT = 1.0; DKD's w lives in alpha and beta.
    row = published_weights()["ls"]["dkd"]
    assert (row["ce_weight"], row["loss_weight"], row["kd_weight"]) == (1.0, 1, 0.0)
