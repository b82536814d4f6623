"""Score a checkpoint on its test (or val) split, LiTS-style: python evaluate.py ckpt=PATH [split=val]"""

import hydra

from lits.core.cli import prepare_hydra, run_task, starting

prepare_hydra()


@hydra.main(version_base="1.3", config_path="configs", config_name="evaluate")
def main(cfg):
    with starting():
        from lits.evaluate.scoring import evaluate  # imported here so --help and config errors stay fast

    return run_task(evaluate, cfg)


if __name__ == "__main__":
    main()
