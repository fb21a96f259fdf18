"""Control for docs/evidence.md: the same LoRA rounds as a setting-I loop, on right trial-1 answers.

    python scripts/evidence_control.py --loop runs/evidence/setting_I --out runs/evidence_control

For each iteration k of the loop, take as many rows as the loop trained on, but made of the model's own
*right trial-1 answers* from that iteration's generation (no failure, no reflection), train the same
way from the previous round's model, and evaluate on the same test problems. If this gains as much, the
loop's gain is not specific to reflection.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import yaml


def rows_like(loop: Path, k: int) -> dict[str, list[dict]]:
    curated = loop / f"iter_{k}" / "curate" / "sft_one_stage"
    sizes = {split: sum(1 for _ in open(curated / f"{split}.jsonl")) for split in ("train", "validation")}
    right = [json.loads(line) for line in open(loop / f"iter_{k}" / "generate" / "episodes.jsonl")]
    right = [e for e in right if e["trial1"]["verdict"]["correct"]]
    rows = [{"prompt": e["trial1"]["messages"], "completion": [{"role": "assistant", "content": e["trial1"]["response"]}],
             "task": e["task"], "episode_id": e["id"]} for e in right]
    return {"train": rows[: sizes["train"]], "validation": rows[sizes["train"]: sizes["train"] + sizes["validation"]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loop", required=True, help="a setting-I loop folder of scripts/evidence.py")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    loop, out = Path(args.loop), Path(args.out)
    model = "smollm2-135m"
    k = 1
    while (loop / f"iter_{k}" / "train" / "config.yaml").is_file():
        train_cfg = yaml.safe_load((loop / f"iter_{k}" / "train" / "config.yaml").read_text())["train"]
        eval_cfg = yaml.safe_load((loop / f"iter_{k}" / "evaluate" / "config.yaml").read_text())["evaluate"]
        data = out / f"iter_{k}" / "data" / "sft_one_stage"
        data.mkdir(parents=True, exist_ok=True)
        for split, rows in rows_like(loop, k).items():
            (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        trained = out / f"iter_{k}" / "train"
        subprocess.run(["reflectevo", "train", str(data.parent), "--setting", "I", "--out", str(trained),
                        "--model", model, "--epochs", str(train_cfg["epochs"]), "--lr", str(train_cfg["learning_rate"]),
                        "--batch-size", str(train_cfg["batch_size"]), "--max-length", str(train_cfg["max_length"])],
                       check=True)
        model = str(trained / "model")
        subprocess.run(["reflectevo", "evaluate", "--task", eval_cfg["tasks"][0], "--out", str(out / f"iter_{k}" / "evaluate"),
                        "--generator", model, "--mode", eval_cfg["mode"], "--split", eval_cfg["split"],
                        "--limit", str(eval_cfg["limit"]), "--max-tokens", str(eval_cfg["max_tokens"]),
                        "--reflection-max-tokens", str(eval_cfg["reflection_max_tokens"]),
                        "--self-check-max-tokens", str(eval_cfg["self_check_max_tokens"])], check=True)
        k += 1


if __name__ == "__main__":
    main()
