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


@pytest.mark.parametrize("model", MODELS)
def test_every_model_builds_at_the_smoke_sizes(model):
    """debug=smoke with any model= (the README suggests model=dynunet debug=smoke) builds the network MONAI accepts."""
    import torch

    from lits.infer.networks import build_model, size_multiple

    cfg = compose_train(f"model={model}", "debug=smoke")
    net = build_model(cfg.model).eval()
    size = size_multiple(cfg.model) * 2
    assert net(torch.zeros(1, 1, size, size)).shape == (1, 2, size, size)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("model.channels=[8]", "model.strides=[]"), r"model.channels=\[8\]: give at least 2 levels"),
        (("model=dynunet", "model.channels=[8,16,32]", "model.strides=[2,2]", "model.deep_supr_num=2"),
         r"model.deep_supr_num=2: give at most 1: dynunet's decoder has 2 up-sampling levels"),
    ],
)  # fmt: skip
def test_network_settings_monai_would_reject_are_one_line(overrides, message):
    from lits.core.config import TrainConfig, typed
    from lits.core.errors import LitsError

    with pytest.raises(LitsError, match=message):
        typed(TrainConfig, compose_train(*overrides))


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
