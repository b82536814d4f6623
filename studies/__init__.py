"""Studies: the experiments behind the recipe's defaults and the phantom's calibration (docs/results.md has their
figures, each with its date, commit, command and machine).

    python -m studies recipe --minutes 3 --seeds 0,1,2      # training ingredients x seeds at a fixed time budget
    python -m studies phantom [--root /data/LiTS]           # the phantom's lesion statistics beside real ones
    python -m studies transfer CKPT...                      # post-processing's effect on lesion finding, and how
                                                            # each network outlines the lesions (per CKPT)
    bash studies/peer_nnunet/run.sh [MINUTES]               # lits against nnU-Net v2 (2d), same data and budget

Run from the checkout; they import lits as a package and start train.py / evaluate.py as a user would.
"""
