"""The headline of an evaluation and how it counted: the one line evaluate.py prints first (and report.md,
report.html and evaluate.log open with), the notes on tumour-free cases and missing predictions, and the order the
montages come in.
"""

from __future__ import annotations

from pathlib import Path

from lits.core.tables import count


def worst_first(rows: list[dict]) -> list[str]:
    """Case ids by tumour error (false positive + false negative tumour voxels), then liver error, the largest first:
    the order of the montages ("slices with the largest tumour error")."""

    def errors(row: dict, s: str) -> int:
        return int(row[f"{s}_pred_voxels"]) + int(row[f"{s}_ref_voxels"]) - 2 * int(row[f"{s}_intersection"])

    return [str(r["case"]) for r in sorted(rows, key=lambda r: (-errors(r, "tumor"), -errors(r, "liver")))]


def on_off(value):
    """Booleans as a reader says them (on / off), anything else as it is."""
    return {True: "on", False: "off"}[value] if isinstance(value, bool) else value


def cases(n: int) -> str:
    return count(n, "case")


def tumor_free(rows: list[dict]) -> dict:
    """How the LiTS rule scores tumour-free references: {cases: how many, of: all, dice_with_tumor: the mean tumour
    Dice over the cases with tumour (None: none has)}. A tumour-free case scores Dice 1 when nothing is predicted."""
    with_tumor = [float(r["tumor_dice"]) for r in rows if int(r["tumor_ref_voxels"]) > 0]
    return {
        "cases": len(rows) - len(with_tumor),
        "of": len(rows),
        "dice_with_tumor": sum(with_tumor) / len(with_tumor) if with_tumor else None,
    }


def tumor_free_note(result: dict) -> str | None:
    """'2 of 6 cases tumour-free, scored 1 when nothing is predicted; 0.000 over the 4 with tumour' (None: none)."""
    free = result["tumor_free"]
    if not free["cases"]:
        return None
    note = f"{free['cases']} of {cases(free['of'])} tumour-free, scored 1 when nothing is predicted"
    if free["dice_with_tumor"] is not None:
        note += f"; {free['dice_with_tumor']:.3f} over the {free['of'] - free['cases']} with tumour"
    return note


def missing_note(result: dict) -> str | None:
    """predictions=: which reference cases had no prediction file and what was done with them (None: none)."""
    missing = result.get("missing_predictions")
    if not missing or not missing["cases"]:
        return None
    shown = ", ".join(missing["cases"][:10]) + (" ..." if len(missing["cases"]) > 10 else "")
    rule = "scored as empty predictions" if missing["rule"] == "empty" else "not scored (missing_predictions=skip)"
    return f"{len(missing['cases'])} of {missing['of']} reference cases have no prediction file, {rule}: {shown}"


def counting_notes(result: dict) -> list[str]:
    """What the headline, report.md and report.html say about how the cases were counted (missing predictions,
    tumour-free cases); empty when there is nothing to say."""
    return [note for note in (missing_note(result), tumor_free_note(result)) if note]


def headline(result: dict, main: dict) -> str:
    """The one line that says how good it is: what was scored, then the LiTS headline numbers, and how missing
    predictions and tumour-free cases were counted."""
    if result["mode"] == "checkpoint":
        what = f"{result['split']} split, {Path(result['ckpt']).name} (epoch {result['trained_epochs']})"
    else:
        what = f"predictions {result['predictions']}"
    recall = main.get("tumor_lesion_recall_iou50")
    notes = counting_notes(result)
    return (
        f"{what}, {cases(result['num_cases'])}, stage {result['main_stage']}: tumour Dice "
        f"{main['tumor_dice_per_case']:.3f} per case / {main['tumor_dice_global']:.3f} global, liver Dice "
        f"{main['liver_dice_per_case']:.3f}"
        + (f", lesion recall {recall:.2f} (IoU > 0.5)" if recall is not None else "")
        + "".join(f" ({n})" for n in notes)
    )
