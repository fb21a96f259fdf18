"""The paper's own scores (its eval/count.py and eval/count_freetext.py) on its raw generation format,
beside ours on the same records, with the differences of definition spelled out.

count.py (option-letter and numeric tasks), per record of the raw file:
    trial1 = output[0].is_correct; trial2 = output[1].is_correct (False if absent)
    acc@t1 = #trial1 / #records;  acc@t2 = (#trial1 + #(not trial1 and trial2)) / #records
count_freetext.py (free text):
    trial-1 "correctness" = #output[0].is_correct / 500
    "improved ratio"      = #(F1 of output[1] > F1 of output[0]) / 500
    where F1 is the trial's F1_score field, else the last "F1 Score: x" of its scratchpad, else 0.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from reflectevo.formats.paper import read_json_objects, read_paper_raw
from reflectevo.report.metrics import Outcome, compute_metrics

PAPER_FREE_TEXT_DENOMINATOR = 500  # count_freetext.py divides by this constant, whatever the file holds

DIFFERENCES = [
    "Denominators: count.py divides by the number of records, as we do; count_freetext.py divides by a "
    "constant 500 whatever the file holds, we divide by the real count.",
    "count.py scores only output[1] (the first trial 2) after a failed trial 1; ours, for comparability, "
    "also takes the first reflection's trial 2 (the best of all reflections is shown separately, as an "
    "upper bound, never as Acc@t2).",
    "count_freetext.py's 'improved ratio' counts problems whose F1 strictly rose from trial 1 to trial 2 "
    "(an improvement rate, not an accuracy); we report exact-match Acc@t2 and mean F1 at t1 and t2.",
    "The paper's numbers have no uncertainty; ours carry 95% percentile bootstrap intervals.",
    "count.py reads one JSON object per line; the paper's raw example file holds pretty-printed objects "
    "one after another, which count.py cannot read as is; we read both layouts.",
    "is_correct is taken as the paper's code judged it (its own answer matching); nothing is re-verified.",
]

_F1_IN_TEXT = re.compile(r"F1 Score:\s*([\d.]+)")


def _f1(trial: dict[str, Any]) -> float:
    """count_freetext.py's F1 of one trial: the F1_score field, else the scratchpad's last score, else 0."""
    if trial.get("F1_score") is not None:
        return float(trial["F1_score"])
    matches = _F1_IN_TEXT.findall(str(trial.get("scratchpad", "")))
    try:
        return float(matches[-1]) if matches else 0.0
    except ValueError:
        return 0.0


def count_py(records) -> dict[str, Any]:
    """eval/count.py, reproduced (percentages, as it prints them)."""
    total = len(records)
    first = sum(r.trial1.correct for r in records)
    second = sum(not r.trial1.correct and len(r.trials) > 1 and r.trials[1].correct for r in records)
    return {"records": total, "first_output_correct": first, "second_output_correct": second,
            "acc_t1": 100 * first / total if total else 0.0,
            "acc_t2": 100 * (first + second) / total if total else 0.0}


def count_freetext_py(raw: list[dict[str, Any]]) -> dict[str, Any]:
    """eval/count_freetext.py (and count_f1.py, its twin), reproduced, constant denominator included."""
    with_output = [obj for obj in raw if len(obj.get("output") or []) >= 1]
    correct = sum(obj["output"][0].get("is_correct", False) is True for obj in with_output)
    improved = sum(len(obj["output"]) >= 2 and _f1(obj["output"][1]) > _f1(obj["output"][0]) for obj in with_output)
    return {"records": len(with_output), "trial1_correct": correct, "improved": improved,
            "trial1_correctness": 100 * correct / PAPER_FREE_TEXT_DENOMINATOR,
            "improved_ratio": 100 * improved / PAPER_FREE_TEXT_DENOMINATOR,
            "has_f1": any("F1_score" in t or "F1 Score:" in str(t.get("scratchpad", ""))
                          for obj in with_output for t in obj["output"])}


def outcomes(records, task: str) -> list[Outcome]:
    result = []
    for r in records:
        t1 = r.trial1
        second = r.second_trials[0] if r.second_trials else None
        t2 = second.correct if (second and not t1.correct) else t1.correct
        result.append(Outcome(task=task, t1=t1.correct, t2_oracle=t2,
                              t1_extraction_failed=not t1.answer.strip(),
                              t2_oracle_extraction_failed=(not second.answer.strip())
                              if (second and not t1.correct) else None))
    return result


def score_paper_raw(path: str | Path, resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The paper's scores and ours for one raw generation file."""
    path = Path(path)
    records = read_paper_raw(path)  # validates; a bad record raises InputError naming file:line
    raw = [obj for _, obj in read_json_objects(path)]
    task = path.stem
    ours = compute_metrics(outcomes(records, task), resamples=resamples, seed=seed)["overall"]
    any_t2 = sum(r.trial1.correct or any(t.correct for t in r.second_trials) for r in records)
    return {"path": str(path), "records": len(records), "count_py": count_py(records),
            "count_freetext_py": count_freetext_py(raw), "ours": ours,
            "best_of_reflections_acc_t2": any_t2 / len(records), "differences": DIFFERENCES}
