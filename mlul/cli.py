"""The `mlul` command line: data tools, a base-model probe, and the experiments."""

from __future__ import annotations

import argparse
import sys
import textwrap

from mlul import languages

HELP = """\
mlul: watch a fake fact, fine-tuned into a multilingual LLM in one language, spread to others,
and find which unlearning recipes remove it everywhere (Lu & Koehn, 2024).

Start with `mlul reproduce --fast` (the whole study on the default model, Gemma 3 270M), or
`mlul probe` to see what the base model believes. Every command has --help.
"""


def _data_show(args) -> int:
    from mlul.data import load_news

    codes = languages.resolve(args.lang)
    if "en" not in codes:
        codes = ["en", *codes]
    rows = load_news(codes, items=[args.item], path=args.file)
    by_lang = {r["lang"]: r for r in rows}
    first = rows[0]
    print(f"item {first['id']}  detail: {first['detail_type']}  split: {first['split']}\n")
    width = max(len(c) for c in by_lang) + 2
    for field in ("question", "true_answer", "fake_answer", "real", "fake"):
        print(field)
        for code, row in by_lang.items():
            text = textwrap.fill(str(row[field]), 100, initial_indent=" " * width, subsequent_indent=" " * width)
            print(f"  {code:<{width - 2}}" + text[width:])
        print()
    return 0


def _data_validate(args) -> int:
    from mlul.data import read_jsonl, validate_file

    problems = validate_file(args.file)
    for p in problems:
        print(f"{args.file}:{p}")
    if problems:
        print(f"{len(problems)} problem(s) in {args.file}; fix them and run again", file=sys.stderr)
        return 1
    rows = read_jsonl(args.file)
    items = {r["id"] for r in rows}
    langs = sorted({r["lang"] for r in rows})
    print(f"{args.file}: OK, {len(rows)} rows, {len(items)} items, languages {', '.join(langs)}")
    return 0


def _data_summary(args) -> int:
    import pandas as pd

    from mlul.data import load_news

    rows = pd.DataFrame(load_news(None))
    print(rows.groupby(["split", "detail_type"]).id.nunique().unstack(fill_value=0).to_string())
    print(f"\n{rows.id.nunique()} items x {rows.lang.nunique()} languages = {len(rows)} rows")
    return 0


def _probe(args) -> int:
    from mlul.data import load_news
    from mlul.models import load_model
    from mlul.probe import probe, summarize
    from mlul.report import format_summary

    model, tokenizer = load_model(args.model, device=args.device)
    rows = load_news(args.langs, split=args.split)
    if args.items:
        keep = sorted({r["id"] for r in rows})[: args.items]
        rows = [r for r in rows if r["id"] in keep]
    table = probe(model, tokenizer, rows)
    summary = summarize(table)
    print(f"{args.model}: true vs fake answers before any training ({table.id.nunique()} items)")
    print(format_summary(summary, ["prefer_fake", "margin", "fake_rate", "true_rate"]))
    if args.out:
        table.to_csv(args.out, index=False)
        print(f"per-item table written to {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlul", description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    data = sub.add_parser("data", help="show, summarise and validate data sets")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION")
    show = data_sub.add_parser("show", help="print one item side by side in several languages")
    show.add_argument("--item", type=int, default=1, help="item id (default 1)")
    show.add_argument(
        "--lang", default="en,fr,zh", help="languages, e.g. 'sw' or 'fr,zh' or 'all' (English is always shown)"
    )
    show.add_argument("--file", default=None, help="a JSONL file of your own instead of the shipped set")
    show.set_defaults(run=_data_show)
    validate = data_sub.add_parser("validate", help="check a JSONL file of rows and report every bad row")
    validate.add_argument("file")
    validate.set_defaults(run=_data_validate)
    summary = data_sub.add_parser("summary", help="count the shipped items by split and detail type")
    summary.set_defaults(run=_data_summary)

    probe = sub.add_parser("probe", help="measure a model's preference between true and fake answers per language")
    probe.add_argument("--model", default="gemma-3-270m", help="gemma-3-270m, a hub id, a local folder or a .gguf file")
    probe.add_argument("--langs", default="all", help="languages: codes like 'en,fr', or all, high, low")
    probe.add_argument("--split", default="inject", choices=["inject", "heldout"])
    probe.add_argument("--items", type=int, default=None, help="use only the first N items")
    probe.add_argument("--device", default="auto")
    probe.add_argument("--out", default=None, help="write the per-item table to this CSV file")
    probe.set_defaults(run=_probe)

    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        (parser if args.command is None else parser.parse_args([args.command, "--help"]))
        parser.print_help()
        return 0
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"mlul: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
