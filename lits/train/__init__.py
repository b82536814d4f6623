"""Training: setup (run.py), the loop (fit.py), the step (step.py), TrainState and checkpoints, hooks, validation,
augmentation, loss, optimisers and DDP. The task function is `lits.train.task.train`."""
