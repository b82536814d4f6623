"""The training-recipe options: LR schedules, time budget, CT normalisation, deep supervision."""

import json
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import SMOKE, compose_train, run_cli
from omegaconf import OmegaConf

from lits.core.errors import LitsError
from lits.data.normalization import Normalization, from_training_cases
from lits.train.deep_supervision import level_weights, supervised_loss
from lits.train.optim import TimeBudget, build_optimizer, lr_at


# ---------------------------------------------------------------------------------------------- LR schedules
def test_cosine_matches_torch_cosine_annealing_also_past_t_max():
    cfg = OmegaConf.create(
        {"name": "adamw", "lr": 3e-4, "weight_decay": 1e-5, "schedule": "cosine", "t_max": 20, "min_lr": 1e-6}
    )
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=20, eta_min=1e-6)
    for epoch in range(30):  # the README's LiTS recipe: T_max 20 with 30 epochs (the LR rises again after 20)
        assert lr_at(cfg, epoch, 30) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9, abs=1e-15), epoch
        opt.step()
        sched.step()


def test_poly_is_nnunets_schedule_and_sgd_is_nesterov():
    cfg = OmegaConf.create(
        {
            "name": "sgd",
            "lr": 1e-2,
            "momentum": 0.99,
            "nesterov": True,
            "weight_decay": 3e-5,
            "schedule": "poly",
            "poly_exponent": 0.9,
        }
    )
    assert [lr_at(cfg, e, 10) for e in (0, 5, 10, 12)] == pytest.approx([1e-2, 1e-2 * 0.5**0.9, 0.0, 0.0])
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(1))], cfg)
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.99


def test_unknown_optimizer_and_schedule_are_one_line_errors():
    with pytest.raises(LitsError, match="optim.name=adam: unknown optimizer"):
        build_optimizer([torch.nn.Parameter(torch.zeros(1))], OmegaConf.create({"name": "adam"}))
    with pytest.raises(LitsError, match="optim.schedule=step"):
        lr_at(OmegaConf.create({"schedule": "step"}), 0, 10)


# ---------------------------------------------------------------------------------------------- time budget
def test_time_budget_plans_whole_epochs_and_stretches_the_schedule():
    budget = TimeBudget(minutes=1.0, max_epochs=30)
    assert budget.position(3) == 3  # before the first plan: the reference length
    assert budget.replan(2, elapsed_s=10.0) == 12  # 5 s per epoch, 50 s left: 10 more
    assert budget.position(6) == pytest.approx(15.0)  # half way through the run = half way through the schedule
    assert not budget.out_of_time(59.0) and budget.out_of_time(60.0)
    assert budget.replan(12, elapsed_s=75.0) == 12  # over budget: never fewer than the epochs done
    plain = TimeBudget(None, 30)
    assert not plain.enabled and plain.replan(5, 1e9) == 30 and not plain.out_of_time(1e9)
    resumed = TimeBudget(1.0, 30, spent_s=50.0, planned=12)
    assert resumed.planned == 12 and resumed.out_of_time(10.0)
    budget.reserve_s = 8.0  # the last validation took 8 s: training stops in time for the final one to fit
    assert not budget.out_of_time(51.9) and budget.out_of_time(52.0)
    assert resumed.replan(10, elapsed_s=5.0) == 10  # 55 s over 10 epochs (both sessions): the 5 s left fit none
    with pytest.raises(LitsError, match="trainer.max_time=0"):
        TimeBudget(0, 30)


@pytest.mark.slow
def test_max_time_stops_training_with_a_validated_checkpoint(tmp_path):
    """A budget far below max_epochs ends the run early, validated and saved (a budget check, not a timing check)."""
    result = run_cli(
        "train.py",
        *SMOKE,
        "trainer.max_time=0.15",
        "trainer.max_epochs=400",
        "trainer.progress=false",
        "data.normalization=ct",
        "hydra.run.dir=outputs/run",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "outputs/run"
    summary = json.loads((run_dir / "train_summary.json").read_text())
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    assert summary["epochs"] == len(history) < 400 and summary["max_time"] == 0.15
    assert "val/tumor_dice_post" in history[-1]  # the last epoch is always validated
    alphas = [h["train/alpha"] for h in history]
    assert alphas[0] == 0.0 and alphas == sorted(alphas)  # the progressive schedule, stretched onto the budget
    state = torch.load(run_dir / "checkpoints/last.pt", weights_only=True)
    assert state["scheduler"]["planned_epochs"] == summary["epochs"] and state["train_seconds"] > 0
    norm = Normalization.from_dict(state["normalization"])
    assert norm.kind == "ct" and norm.clip[0] < norm.mean < norm.clip[1]


@pytest.mark.slow
def test_a_budget_shorter_than_an_epoch_says_where_it_stopped_and_warns(tmp_path):
    """512 steps per epoch against a 1.2 s budget: it ends mid-epoch, and says so, and says the budget is too short."""
    result = run_cli("train.py", *SMOKE, "trainer.max_time=0.02", "data.sampling.samples_per_epoch=2048",
                     "trainer.progress=false", "hydra.run.dir=outputs/run", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert re.search(r"time budget reached at step \d+ of 512 of epoch 1: the epoch ends here", out), out[-3000:]
    assert re.search(r"WARNING: trainer.max_time=0.02 fits only 0.\d epochs \(\d+ steps\) at this speed", out)
    assert "give trainer.max_time=" in out and "of an epoch's steps without validation" in out


# ---------------------------------------------------------------------------------------------- CT normalisation
def fake_case(seed: int, liver_hu: float, z: int = 6) -> SimpleNamespace:
    rng = np.random.default_rng(seed)
    label = np.zeros((z, 16, 16), np.uint8)
    label[1:5, 4:12, 4:12] = 1
    label[2:4, 6:9, 6:9] = 2
    hu = np.where(label > 0, rng.normal(liver_hu, 20, label.shape), -500.0)
    unit = ((np.clip(hu, -200, 250) + 200) / 450).astype(np.float32)
    return SimpleNamespace(image=unit, label=label, stats={"liver_voxels": (label >= 1).sum(axis=(1, 2))})


def test_ct_statistics_are_the_training_foregrounds_percentiles_and_moments():
    cases = [fake_case(0, 90.0), fake_case(1, 120.0)]
    data_cfg = OmegaConf.create({"normalization": "ct", "window": [-200, 250]})
    norm = from_training_cases(data_cfg, cases)
    fg = np.concatenate([c.image[c.label >= 1] * 450.0 - 200.0 for c in cases])  # few voxels: all of them are used
    assert norm.clip == pytest.approx((np.percentile(fg, 0.5), np.percentile(fg, 99.5)), abs=1e-3)
    assert norm.mean == pytest.approx(fg.mean(), abs=1e-3) and norm.std == pytest.approx(fg.std(), abs=1e-3)
    x = torch.rand(2, 1, 8, 8).contiguous(memory_format=torch.channels_last)
    expected = ((x * 450 - 200).clamp(*norm.clip) - norm.mean) / norm.std
    out = norm.apply(x)
    torch.testing.assert_close(out, expected)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert Normalization.from_dict(json.loads(json.dumps(norm.to_dict()))) == norm  # survives a checkpoint
    window = from_training_cases(OmegaConf.create({"normalization": "window", "window": [-200, 250]}), cases)
    assert window.apply(x) is x and Normalization.from_dict(None) == Normalization()


def test_ct_refuses_a_window_that_clips_the_foreground():
    bright = [fake_case(0, 240.0)]  # about a third of the liver above the 250 HU bound
    with pytest.raises(LitsError, match=r"sits at the data.window bound 250 HU.*data.window=\[-1000,1000\]"):
        from_training_cases(OmegaConf.create({"normalization": "ct", "window": [-200, 250]}), bright)
    with pytest.raises(LitsError, match="data.normalization=zscore"):
        from_training_cases(OmegaConf.create({"normalization": "zscore", "window": [-200, 250]}), bright)


# ---------------------------------------------------------------------------------------------- deep supervision
def test_deep_supervision_weights_levels_by_halves():
    assert level_weights(3) == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    calls = []

    def loss_fn(logits, target, alpha):
        calls.append(float(logits.mean()))
        return logits.mean() * alpha, {"dice": logits.mean()}

    stack = torch.stack([torch.full((2, 2, 4, 4), v) for v in (1.0, 2.0, 4.0)], dim=1)  # (B, L, C, H, W)
    total, parts = supervised_loss(loss_fn, stack, torch.zeros(2, 2, 4, 4), 0.5)
    assert calls == [1.0, 2.0, 4.0]
    assert float(total) == pytest.approx(0.5 * (4 / 7 * 1 + 2 / 7 * 2 + 1 / 7 * 4)) and float(parts["dice"]) == 1.0
    plain, _ = supervised_loss(loss_fn, stack[:, 0], torch.zeros(2, 2, 4, 4), 0.5)
    assert float(plain) == 0.5


def test_dynunet_trains_with_deep_supervision_and_predicts_plainly():
    from lits.infer.networks import build_model

    cfg = compose_train("model=dynunet").model
    net = build_model(cfg)
    x = torch.zeros(2, 1, 32, 32)
    assert net.train()(x).shape == (2, 1 + cfg.deep_supr_num, 2, 32, 32)
    out = net.eval()(x)
    assert out.shape == (2, 2, 32, 32)
    heads = [m.bias for n, m in net.named_modules() if isinstance(m, torch.nn.Conv2d) and m.out_channels == 2]
    assert len(heads) == 1 + cfg.deep_supr_num  # every head starts at the foreground prior
    for bias in heads:
        torch.testing.assert_close(torch.sigmoid(bias.detach()), torch.tensor(cfg.output_prior))


def test_inference_feeds_the_network_what_training_fed_it():
    """evaluate/predict take the normalisation from the checkpoint and apply it before the network."""
    from lits.infer.predictor import predict_volume
    from lits.infer.spec import spec_from_checkpoint

    norm = Normalization("ct", (-200.0, 250.0), (20.0, 190.0), 110.0, 27.0)
    config = {"model": {"arch": "unet", "channels": [8, 16, 32], "strides": [2, 2]}, "loss": {"temperature": 1.0},
              "data": {"window": [-200.0, 250.0]}}  # fmt: skip
    settings = spec_from_checkpoint({"config": config, "normalization": norm.to_dict()}, "ckpt").predictor_settings()
    assert settings["normalization"] == norm
    older = spec_from_checkpoint({"config": config}, "ckpt")  # older checkpoints: the window
    assert older.predictor_settings()["normalization"].kind == "window"
    torch.manual_seed(0)
    net = torch.nn.Conv2d(1, 2, 3, padding=1).eval()
    image = np.random.default_rng(0).random((3, 16, 16)).astype(np.float32)
    probs = predict_volume(net, image, torch.device("cpu"), size_multiple=4, amp="off", normalization=norm)
    with torch.no_grad():
        expected = torch.sigmoid(net(norm.apply(torch.from_numpy(image)[:, None]))).permute(1, 0, 2, 3).numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-5)
