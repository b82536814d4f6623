"""Train a liver/tumour U-Net: python train.py experiment=progressive [key=value ...]"""

import hydra

from lits.core.cli import run_stage


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg):
    from lits.train.fit import run  # imported here so --help and config errors stay fast

    return run_stage(run, cfg)


if __name__ == "__main__":
    main()
