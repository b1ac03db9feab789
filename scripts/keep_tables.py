"""Copy the tables of a result cache into another folder, leaving out the weights, so that the
study's cached steps can be committed and a later run on another machine resumes from them.

    python scripts/keep_tables.py ~/.cache/mlul/results results/steps   # after a study run
    cp -r results/steps/. ~/.cache/mlul/results/ && mlul study          # resume elsewhere

An injection step is left out whole (its result is the trained weights, up to 1 GB); it is
computed again only where a step that is not kept needs the injected model. Every other step
keeps its tables and values and drops its tensors (an unlearning cell's adapter, which nothing
reads back), and is rewritten with its own manifest, so the copy is a valid cache. Entries in
the destination that are not in the source are left alone.
"""

import argparse
import json
import sys
from pathlib import Path

from mlul.cache import CorruptEntry, _is_tensor_dict, encode, publish, read_entry

WEIGHTS_ONLY = {"inject"}


def keep_tables(source: Path, destination: Path) -> tuple[int, int]:
    """(entries copied, entries skipped as corrupt)."""
    copied = skipped = 0
    for kind in sorted(p for p in source.iterdir() if p.is_dir() and p.name not in WEIGHTS_ONLY):
        for folder in sorted(p for p in kind.iterdir() if p.is_dir() and not p.name.startswith(".")):
            try:
                result = read_entry(folder)
            except (CorruptEntry, FileNotFoundError) as err:
                print(f"skipped {kind.name}/{folder.name}: {err}", file=sys.stderr)
                skipped += 1
                continue
            key = json.loads((folder / "key.json").read_text())  # checked by read_entry's manifest
            tables = {name: value for name, value in result.items() if not _is_tensor_dict(value)}
            target = destination / kind.name / folder.name
            target.parent.mkdir(parents=True, exist_ok=True)
            publish(encode(key, tables), target, replace=True)
            copied += 1
    return copied, skipped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a result cache (MLUL_RESULTS, default ~/.cache/mlul/results)")
    parser.add_argument("destination", type=Path, help="where the tables go, e.g. results/steps")
    args = parser.parse_args()
    if not args.source.is_dir():
        sys.exit(f"keep_tables: {args.source} is not a folder; give the result cache a study ran with")
    copied, skipped = keep_tables(args.source, args.destination)
    print(f"kept the tables of {copied} cached steps in {args.destination} ({skipped} corrupt entries skipped)")


if __name__ == "__main__":
    main()
