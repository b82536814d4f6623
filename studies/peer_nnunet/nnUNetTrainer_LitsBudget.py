"""nnU-Net's default trainer on a wall-clock budget (peer benchmark for lits; studies/peer_nnunet/run.sh).

Installed by copying this file into <site-packages>/nnunetv2/training/nnUNetTrainer/ (nnU-Net finds trainers by
class name there; not under variants/, whose modules import timm). Everything of nnU-Net's recipe is kept: the
plans, augmentation, Dice+CE with deep supervision, SGD Nesterov (lr 1e-2, momentum 0.99), poly LR, foreground
oversampling, checkpoint_best / checkpoint_final. What changes:

* the batch size: LITS_PEER_NNUNET_BATCH (default 2; "plans" keeps the planned one). nnU-Net sizes its 2d batch to
  fill an 8 GB GPU (49 slices of 256x256 for our synthetic data); its 33M-parameter 2d U-Net takes ~1-2 s per
  256x256 slice forward+backward on 2 CPU cores, so a batch of 49 is ~80 s per iteration: a 10-minute budget would
  see ~7 optimizer steps. Batch 2 is nnU-Net's own minimum (what its 3d plans use when memory is tight) and gives
  the recipe a few hundred steps. Network, patch size and everything else stay as planned.
* epochs of 50 training / 10 validation iterations instead of 250 / 50: at ~2 s per iteration (batch 2) a 250-
  iteration epoch (~8 min) would use up the whole budget in one epoch. 50-iteration epochs give the poly schedule
  (stepped per epoch) several steps in 10 minutes, and keep the per-epoch extras (pseudo-Dice validation,
  progress plot, checkpoint_best) to a few percent of the time. What an iteration is does not change, only how
  often nnU-Net's epoch bookkeeping runs.
* the number of epochs comes from the budget LITS_PEER_MINUTES (minutes of training, from the first iteration;
  data loader start-up and unpacking are excluded, like our cache building). After every epoch (so first after
  epoch 0) num_epochs = done + floor(remaining / mean epoch cost), and the poly scheduler's max_steps follows it,
  so the LR reaches ~0 at the planned end (the same planning as lits' trainer.max_time).
* a hard stop: when the budget runs out mid-epoch the epoch's training loop ends there, its short validation
  runs, and training ends with nnU-Net's normal on_train_end (checkpoint_final.pth).
* nnU-Net's final validation (sliding-window prediction of the val cases, run by nnUNetv2_train after training,
  no CLI flag to skip it) is skipped unless LITS_PEER_NNUNET_VAL=1: the benchmark scores the test cases instead.
* budget.json in the fold folder records the training seconds, epochs and iterations done.
"""

import json
import os
from os.path import join
from time import perf_counter

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class nnUNetTrainer_LitsBudget(nnUNetTrainer):
    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),  # noqa: B008  (nnUNetTrainer's own signature)
    ):
        super().__init__(plans, configuration, fold, dataset_json, device)
        minutes = float(os.environ.get("LITS_PEER_MINUTES", "10"))
        if minutes <= 0:
            raise ValueError(f"LITS_PEER_MINUTES={minutes}: give the training budget in minutes (> 0)")
        self.budget_s = 60.0 * minutes
        self.num_iterations_per_epoch = 50
        self.num_val_iterations_per_epoch = 10
        self.num_epochs = 1000  # placeholder until the first epoch is timed; the poly schedule follows the plan
        self.iterations_done = 0
        self.batch_override = os.environ.get("LITS_PEER_NNUNET_BATCH", "2")

    def _set_batch_size_and_oversample(self):
        super()._set_batch_size_and_oversample()  # the plans' batch size (and DDP handling)
        if self.batch_override != "plans":
            planned, self.batch_size = self.batch_size, int(self.batch_override)
            self.print_to_log_file(f"batch size {self.batch_size} (planned {planned}; LITS_PEER_NNUNET_BATCH)")

    def _plan(self, epochs_done: int, elapsed: float) -> None:
        cost = elapsed / epochs_done
        self.num_epochs = max(epochs_done, epochs_done + int((self.budget_s - elapsed) // cost))
        self.lr_scheduler.max_steps = self.num_epochs

    def run_training(self):
        # nnUNetTrainer.run_training with a clock: a while loop because num_epochs is re-planned as we go
        self.on_train_start()
        start = perf_counter()
        self.print_to_log_file(
            f"time budget {self.budget_s / 60:g} min, {self.num_iterations_per_epoch} train / "
            f"{self.num_val_iterations_per_epoch} val iterations per epoch"
        )
        out_of_time = False
        while self.current_epoch < self.num_epochs and not out_of_time:
            self.on_epoch_start()
            self.on_train_epoch_start()
            train_outputs = []
            for _ in range(self.num_iterations_per_epoch):
                train_outputs.append(self.train_step(next(self.dataloader_train)))
                self.iterations_done += 1
                if perf_counter() - start >= self.budget_s:
                    out_of_time = True
                    self.print_to_log_file(f"time budget reached after {len(train_outputs)} iterations of this epoch")
                    break
            self.on_train_epoch_end(train_outputs)
            with torch.no_grad():
                self.on_validation_epoch_start()
                val_outputs = [
                    self.validation_step(next(self.dataloader_val)) for _ in range(self.num_val_iterations_per_epoch)
                ]
                self.on_validation_epoch_end(val_outputs)
            self.on_epoch_end()  # increments current_epoch
            elapsed = perf_counter() - start
            out_of_time = out_of_time or elapsed >= self.budget_s
            if not out_of_time:
                self._plan(self.current_epoch, elapsed)
                self.print_to_log_file(
                    f"{elapsed / 60:.2f} of {self.budget_s / 60:g} min used: planned epochs {self.num_epochs}"
                )
        self.train_seconds = perf_counter() - start
        self.on_train_end()  # checkpoint_final.pth, as nnU-Net always ends
        record = {
            "budget_minutes": self.budget_s / 60,
            "train_seconds": round(self.train_seconds, 1),
            "epochs": self.current_epoch,
            "iterations": self.iterations_done,
            "iterations_per_epoch": self.num_iterations_per_epoch,
            "val_iterations_per_epoch": self.num_val_iterations_per_epoch,
            "batch_size": self.batch_size,
            "planned_batch_size": self.configuration_manager.batch_size,
            "patch_size": list(self.configuration_manager.patch_size),
            "n_proc_DA": os.environ.get("nnUNet_n_proc_DA"),  # noqa: SIM112  (nnU-Net's variable name)
            "torch_threads": torch.get_num_threads(),
        }
        with open(join(self.output_folder, "budget.json"), "w") as f:
            json.dump(record, f, indent=1)
        self.print_to_log_file(f"budget run done: {record}")

    def perform_actual_validation(self, save_probabilities: bool = False):
        if os.environ.get("LITS_PEER_NNUNET_VAL") == "1":
            return super().perform_actual_validation(save_probabilities)
        self.print_to_log_file("final validation skipped (set LITS_PEER_NNUNET_VAL=1 to run it)")
