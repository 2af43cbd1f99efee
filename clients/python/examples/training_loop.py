"""A minimal online-RL data loop over the aiopslab API, GRPO-style.

Each iteration submits a group of N runs of one problem with one model,
waits for them, reads the group's rewards (their mean and variance, and each
run's group-relative advantage), and exports the group's episodes to a JSON
Lines file a trainer can read (``datasets.load_dataset("json", ...)`` or
``pyarrow.json.read_json``).

    python examples/training_loop.py --url http://localhost:8000 \\
        --problem misconfig_app_hotel_res-detection-1 --model gpt-4o-mini --group-size 8 --iterations 2

The export has no ``group_id`` filter, so each batch carries a metadata tag of
its own (``batch``) and the export filters on it.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from pathlib import Path
from typing import List

from aiopslab_client import Client


def advantages(rewards: List[float]) -> List[float]:
    """Group-relative advantages: each reward minus the group's mean, over
    the group's standard deviation (0 when every reward is the same)."""
    mean = statistics.fmean(rewards)
    spread = statistics.pstdev(rewards)
    return [(r - mean) / spread if spread > 0 else 0.0 for r in rewards]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--url", default=None, help="the server (default $AIOPSLAB_URL or http://localhost:8000)"
    )
    parser.add_argument("--problem", default="misconfig_app_hotel_res-detection-1")
    parser.add_argument("--model", default="gpt-4o-mini")
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("episodes"))
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for one group")
    args = parser.parse_args()

    run = uuid.uuid4().hex[:8]
    args.out.mkdir(parents=True, exist_ok=True)
    with Client(args.url) as client:
        print(f"server {client.base_url}: {client.health().store} store, run {run}")
        for iteration in range(args.iterations):
            tag = f"{run}-{iteration}"
            started = time.monotonic()
            batch = client.create_batch(
                args.problem,
                count=args.group_size,
                # model_version: the policy this group samples from (here the iteration), stamped on each
                # episode and LLM call, so the export below takes only this policy's episodes.
                agent_config={"model": args.model, "temperature": 1.0, "model_version": iteration},
                metadata={"run": run, "batch": tag, "iteration": str(iteration)},
                idempotency_key=tag,  # a retried submission creates nothing twice
            )
            print(f"[{iteration}] submitted group {batch.group_id} ({len(batch.tasks)} x {args.problem})")
            client.wait(batch.tasks, timeout=args.timeout, poll=0.5)
            group = client.group(batch.group_id)
            rewards = group.rewards
            mean, variance = statistics.fmean(rewards), statistics.pvariance(rewards)
            print(
                f"[{iteration}] finished in {time.monotonic() - started:.1f} s: {group.by_status}; "
                f"rewards {rewards} mean {mean:.3f} variance {variance:.3f}"
            )
            print(f"[{iteration}] advantages {[round(a, 3) for a in advantages(rewards)]}")
            path = args.out / f"group-{iteration}.jsonl"
            # The export holds valid episodes only by default: an infrastructure abort is never a reward of 0.
            count = client.export_to(path, metadata={"batch": tag}, min_model_version=iteration)
            print(f"[{iteration}] exported {count} episodes to {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
