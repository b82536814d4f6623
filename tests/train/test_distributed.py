"""DDP on CPU (gloo): a real `torchrun --nproc_per_node=2` smoke training, and the global Dice's gradient."""

import json
import os

import pytest
import torch
from conftest import FAULTS, REPO, run_python
from omegaconf import OmegaConf

from lits.core.config import LossConfig
from lits.train.loss import HybridLoss, targets_from_labels

LOSS = OmegaConf.structured(LossConfig)  # the loss group's defaults


# 2 CPU processes x batch 4, 32 draws per epoch: 4 steps per epoch, 8 in all; last.pt also at step 5 (mid-epoch 1).
# NaN injected on rank 1 only at step 2: rank 0 must skip that step too (else the gradient all-reduce would hang).
COMMON = [
    *FAULTS,
    "trainer.progress=false",
    "trainer.deterministic=true",
    "trainer.save_every_steps=5",
    "loss.dice_reduction=global",
    "faults.nan_steps=[2]",
]


def torchrun(work, run, *overrides):
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    args = [*COMMON, f"hydra.run.dir=outputs/{run}", *overrides]
    return run_python(*launcher, REPO / "train.py", *args, cwd=work, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("ddp")
    result = torchrun(work, "ddp", "faults.sample_log=true")
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return work, work / "outputs/ddp", result


@pytest.mark.slow
def test_one_set_of_outputs_written_by_rank_0(ddp_run):
    work, run_dir, result = ddp_run
    assert [p.name for p in (work / "outputs").iterdir()] == ["ddp"]  # (checked before the resume test adds its run)
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    assert [p.name for p in (run_dir / "tensorboard").iterdir()] == ["train"]
    assert len(list((run_dir / "tensorboard/train").iterdir())) == 1  # one events file: rank 0's
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2] and [h["step"] for h in history] == [
        4,
        8,
    ]  # 32 draws / (2 ranks x 4)
    assert [h["train/bad_steps"] for h in history] == [1, 0]  # both ranks skipped step 2 together
    assert (result.stdout + result.stderr).count("non-finite loss at epoch 1 step 2") == 1  # said once, by rank 0
    state = torch.load(run_dir / "checkpoints/last.pt", weights_only=True)
    assert (
        state["world_size"] == 2
        and len(state["rank_states"]) == 2
        and state["config"]["loss"]["dice_reduction"] == "global"
    )
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in state["model"])  # the plain network's weights


@pytest.mark.slow
def test_ranks_draw_disjoint_samples_of_one_global_sequence(ddp_run):
    from lits.data.prepare import prepare
    from lits.data.sampling import LesionSampler, SamplingConfig, SliceIndex

    _, run_dir, _ = ddp_run
    logs = {
        r: [json.loads(line) for line in (run_dir / f"debug/samples-rank{r}.jsonl").read_text().splitlines()]
        for r in (0, 1)
    }
    state = torch.load(run_dir / "checkpoints/last.pt", weights_only=True)
    cfg = OmegaConf.create(state["config"])
    _, cases = prepare(cfg.data, cfg.seed, splits=state["splits"], only=("train",), progress=False)
    sampling = SamplingConfig(**cfg.data.sampling)
    one_process = LesionSampler(SliceIndex(cases["train"]).weights(sampling), sampling.samples_per_epoch, seed=cfg.seed)
    for epoch in (1, 2):  # as the run numbers them; the sampler's epoch index counts from 0
        r0, r1 = logs[0][epoch - 1], logs[1][epoch - 1]
        assert r0["epoch"] == r1["epoch"] == epoch
        assert not set(r0["draws"]) & set(r1["draws"])
        one_process.set_epoch(epoch - 1)
        expected = list(one_process)  # what a single process draws: the ranks split it position by position
        assert sorted(zip(r0["draws"] + r1["draws"], r0["slices"] + r1["slices"])) == sorted(
            (d, s) for s, d in expected
        )
        assert r0["draws"] == [d for _, d in expected[0::2]] and r1["draws"] == [d for _, d in expected[1::2]]


@pytest.mark.slow
def test_validation_equals_a_single_process_evaluation_of_the_same_weights(ddp_run):
    from lits.data.prepare import prepare
    from lits.infer.networks import build_model
    from lits.infer.spec import spec_from_checkpoint
    from lits.train.validate import validate

    _, run_dir, _ = ddp_run
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    state = torch.load(run_dir / "checkpoints/last.pt", weights_only=True)
    cfg = OmegaConf.create(state["config"])
    model = build_model(cfg.model).to(memory_format=torch.channels_last)
    model.load_state_dict(state["model"])
    _, cases = prepare(cfg.data, cfg.seed, splits=state["splits"], only=("val",), progress=False)
    spec = spec_from_checkpoint(state, "last.pt")  # the network settings and post-processing the run validated with
    t = cfg.trainer
    metrics = validate(
        model, cases["val"], spec, torch.device("cpu"), "off", t.val_batch_size, t.val_tta, False
    ).metrics
    assert metrics == {k: v for k, v in history[-1].items() if k.startswith("val/")} == state["metrics"]


@pytest.mark.slow
def test_ddp_run_killed_mid_epoch_resumes_to_the_same_weights(ddp_run):
    work, run_dir, _ = ddp_run
    killed = torchrun(work, "killed", "faults.kill_at_step=7")  # rank 1 SIGKILLs itself; torchrun stops rank 0
    assert killed.returncode != 0
    state = torch.load(work / "outputs/killed/checkpoints/last.pt", weights_only=True)
    assert (state["position"], state["step"]) == ({"epoch": 2, "batch": 1}, 5)  # 1 batch of epoch 2 done
    resumed = torchrun(work, "killed")
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-4000:]
    straight, again = (
        torch.load(d / "checkpoints/last.pt", weights_only=True) for d in (run_dir, work / "outputs/killed")
    )
    assert straight["step"] == again["step"] == 8
    assert all(torch.equal(straight["model"][k], again["model"][k]) for k in straight["model"])
    assert straight["metrics"] == again["metrics"]


# ---------------------------------------------------------------------------------------------- global Dice
def batch():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(4, 1, 16, 16, generator=g)
    label = torch.randint(0, 3, (4, 16, 16), generator=g)
    return image, targets_from_labels(label)


def net():
    torch.manual_seed(0)
    return torch.nn.Conv2d(1, 2, 3, padding=1)


def _ddp_worker(rank, world, store, out):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    # a file store, not tcp://: with tcp:// rank 0 hosts the store, and when it exits first the other rank's
    # teardown loses its connection and aborts (seen once in CI: "terminate called without an active exception")
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        model = net()
        ddp = DistributedDataParallel(model)
        image, target = batch()
        half = slice(2 * rank, 2 * rank + 2)
        loss, parts = HybridLoss(OmegaConf.merge(LOSS, {"dice_reduction": "global"}))(
            ddp(image[half]), target[half], 0.6
        )
        loss.backward()  # DDP averages the gradients of the two ranks
        if rank == 0:
            torch.save({"dice": parts["dice"], "grads": [p.grad for p in model.parameters()]}, out)
        dist.barrier()  # neither rank tears down while the other still communicates
        del ddp, loss, parts  # DDP's reducer holds gloo work objects with tensors in them
    finally:
        dist.destroy_process_group()
    # Skip the interpreter's finalisation: tensors still referenced from gloo's C++ threads, freed while the
    # interpreter is torn down, can abort the process ("terminate called without an active exception", SIGABRT,
    # seen once in CI after the results were written). The results are on disk and the group is destroyed.
    os._exit(0)


def test_global_dice_over_two_ranks_equals_one_process_on_the_whole_batch(tmp_path):
    # spawn, not fork: this pytest process already runs torch's thread pools, and a child forked from it can inherit a
    # pool lock held by a thread that does not exist in the child and wait on it forever
    torch.multiprocessing.start_processes(
        _ddp_worker, args=(2, str(tmp_path / "store"), str(tmp_path / "rank0.pt")), nprocs=2, start_method="spawn"
    )
    ddp = torch.load(tmp_path / "rank0.pt", weights_only=True)
    model = net()
    image, target = batch()
    loss, parts = HybridLoss(LOSS)(model(image), target, 0.6)  # MONAI Dice on the whole batch, one process
    loss.backward()
    assert ddp["dice"].item() == pytest.approx(parts["dice"].item(), rel=1e-6)
    for got, want in zip(ddp["grads"], [p.grad for p in model.parameters()]):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("variant", [{}, {"squared": True}, {"jaccard": True}])
def test_global_dice_in_one_process_is_monai_dice(variant):
    local = HybridLoss(OmegaConf.merge(LOSS, {"dice": variant}))
    glob = HybridLoss(OmegaConf.merge(LOSS, {"dice": variant, "dice_reduction": "global"}))
    logits = torch.randn(4, 2, 16, 16, generator=torch.Generator().manual_seed(1))
    _, target = batch()
    assert glob(logits, target, 1.0)[0].item() == pytest.approx(local(logits, target, 1.0)[0].item(), rel=1e-6)


def test_global_dice_needs_batch_sums():
    from lits.core.errors import LitsError

    with pytest.raises(LitsError, match="needs loss.dice.batch=true"):
        HybridLoss(OmegaConf.merge(LOSS, {"dice_reduction": "global", "dice": {"batch": False}}))


@pytest.mark.slow
def test_fp16_overflow_on_one_rank_skips_the_step_on_every_rank(tmp_path):
    # the backward pass of step 2 overflows on rank 1 only; rank 0 learns of it through the gradient all-reduce
    result = torchrun(tmp_path, "fp16", "trainer.amp=fp16", "faults.nan_steps=[]", "faults.overflow_steps=[2]")
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    run_dir = tmp_path / "outputs/fp16"
    state = torch.load(run_dir / "checkpoints/last.pt", weights_only=True)  # rank 0's model, optimizer and scaler
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    assert [h["train/bad_steps"] for h in history] == [0, 0]  # an overflow is not a bad step
    assert state["step"] == 8 and int(state["optimizer"]["state"][0]["step"]) == 7  # rank 0 skipped step 2 too
    initial = torch.amp.GradScaler("cpu").get_scale()
    assert state["scaler"]["scale"] == initial / 2 and state["scaler"]["_growth_tracker"] == 5  # steps 3..7
    assert [h["train/grad_scale"] for h in history] == [initial / 2] * 2
