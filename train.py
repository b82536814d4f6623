"""Train a liver/tumour U-Net: python train.py experiment=progressive [key=value ...]   (--help lists the options)"""

import hydra

from lits.core.cli import prepare_hydra, run_task, starting

prepare_hydra()


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg):
    with starting():
        from lits.train.task import train  # imported here so --help and config errors stay fast

    return run_task(train, cfg)


if __name__ == "__main__":
    main()
