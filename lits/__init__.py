"""lits: liver and liver-tumour segmentation on CT, trained and scored the LiTS2017 way."""

__version__ = "0.1.0"
