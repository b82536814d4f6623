"""Every experiment and config group composes; overrides reach the values the code reads."""

import pytest
from conftest import REPO, compose, compose_train
from omegaconf import OmegaConf

EXPERIMENTS = sorted(p.stem for p in (REPO / "configs/experiment").glob("*.yaml"))
MODELS = sorted(p.stem for p in (REPO / "configs/model").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_resolves(experiment):
    cfg = compose_train(f"experiment={experiment}")
    assert cfg.name == experiment
    plain = OmegaConf.to_container(cfg, resolve=True)
    assert plain["data"]["root"].startswith("/tmp/lits-root/data/")


def test_ablation_experiments_set_their_alpha():
    alphas = {e: compose_train(f"experiment={e}").loss.schedule for e in ("bce", "dice", "hybrid", "progressive")}
    assert (alphas["bce"].kind, alphas["bce"].alpha) == ("constant", 0.0)
    assert (alphas["dice"].kind, alphas["dice"].alpha) == ("constant", 1.0)
    assert (alphas["hybrid"].kind, alphas["hybrid"].alpha) == ("constant", 0.5)
    assert alphas["progressive"].kind == "progressive"


@pytest.mark.parametrize("model", MODELS)
def test_models_build_from_config(model):
    import torch

    from lits.infer.networks import build_model, count_parameters, size_multiple

    cfg = compose_train(f"model={model}")
    net = build_model(cfg.model).eval()  # eval: deep-supervision models return the main output only
    size = size_multiple(cfg.model) * 2
    out = net(torch.zeros(1, 1, size, size))
    assert out.shape == (1, 2, size, size)
    if model == "resunet34":
        assert 23.0e6 < count_parameters(net) < 24.0e6  # the README's LiTS recipe model: 23.6M


def test_command_line_overrides_reach_values():
    cfg = compose_train("trainer.max_epochs=3", "data=lits", "data.root=/x/LiTS", "loss.schedule.final_alpha=0.7")
    assert cfg.trainer.max_epochs == 3 and cfg.data.root == "/x/LiTS" and cfg.loss.schedule.final_alpha == 0.7
    assert cfg.optim.t_max == 3  # cosine period follows max_epochs unless set


def test_unknown_override_is_rejected():
    with pytest.raises(Exception, match="trainer.max_epoch"):
        compose_train("trainer.max_epoch=3")


def test_evaluate_requires_ckpt():
    cfg = compose("evaluate")
    assert OmegaConf.is_missing(cfg, "ckpt")
