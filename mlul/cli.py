"""The `mlul` command line: data tools, a base-model probe, and the experiments."""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from mlul import languages
from mlul.report import format_summary

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


def _spread_config(args):
    from dataclasses import replace

    from mlul.experiment import FAST, SpreadConfig

    config = FAST if args.fast else SpreadConfig(items=None, utility_items=None)
    inject = replace(config.inject, **{k: v for k, v in (("epochs", args.epochs), ("lr", args.lr)) if v is not None})
    changes = {"model": args.model, "probe_languages": args.probe, "inject": inject, "device": args.device}
    if args.items is not None:
        changes["items"] = args.items
    if getattr(args, "inject", None) is not None:
        changes["inject_languages"] = args.inject
    return replace(config, **changes)


def _lab(args, config):
    from mlul.cache import Cache
    from mlul.experiment import Lab

    return Lab(config.model, config.device, Cache(enabled=not args.no_cache))


def _spread(args) -> int:
    from mlul.experiment import spread

    config = _spread_config(args)
    print(f"mlul spread: {config}")
    result = spread(config, _lab(args, config))
    _write_spread(result, Path(args.out), Path(args.out))
    return 0


def _write_spread(result, tables: Path, figures: Path) -> None:
    from mlul import plots

    for folder in (tables, figures):
        folder.mkdir(parents=True, exist_ok=True)
    result.summary.to_csv(tables / "spread_summary.csv", index=False)
    result.per_item.to_csv(tables / "spread_per_item.csv", index=False)
    result.summary.to_json(tables / "spread_summary.json", orient="records", indent=1)
    plots.save(plots.spread_matrix(result.summary), figures / "spread_matrix.png")
    plots.save(plots.spread_by_language(result.summary), figures / "spread_by_language.png")
    print(format_summary(result.summary, ["fake_rate", "margin_shift", "specificity_shift"], ["inject_lang", "lang"]))
    print(f"\ntables in {tables}/, figures in {figures}/ (spread_matrix.png, spread_by_language.png)")
    print(f"spread took {result.seconds:.0f} s")


def _reproduce_config(args):
    from dataclasses import replace

    from mlul.experiment import ReproduceConfig, fast_reproduce_config

    spread = replace(_spread_config(args), inject_languages=args.inject)
    base = fast_reproduce_config(args.inject) if args.fast else ReproduceConfig()
    config = replace(base, spread=spread, inject_language=args.inject, methods=args.methods)
    if args.settings is not None:
        config = replace(config, settings=args.settings)
    changes = {
        k: v
        for k, v in (("steps", args.steps), ("lr", args.unlearn_lr), ("probe_every", args.probe_every))
        if v is not None
    }
    if args.steps is not None:
        changes["epochs"] = None  # a step count replaces the fast configuration's passes over the data
    return replace(config, unlearn=replace(config.unlearn, **changes))


def _reproduce(args) -> int:
    from mlul.experiment import reproduce

    config = _reproduce_config(args)
    print(f"mlul reproduce: {config}")
    result = reproduce(config, _lab(args, config.spread))
    _write_reproduce(result, Path(args.out), Path(args.out))
    return 0


def _write_reproduce(result, tables: Path, figures: Path) -> None:
    from mlul import plots

    for folder in (tables, figures):
        folder.mkdir(parents=True, exist_ok=True)
    result.summary.to_csv(tables / "results.csv", index=False)
    result.per_item.to_csv(tables / "per_item.csv", index=False)
    result.utility.to_csv(tables / "utility.csv", index=False)
    plots.save(plots.unlearn_by_setting(result.summary), figures / "unlearn_by_setting.png")
    plots.save(plots.unlearn_dose_response(result.per_item), figures / "unlearn_dose_response.png")
    plots.save(plots.unlearn_utility(result.utility), figures / "unlearn_utility.png")
    print(format_reproduce(result))
    print(f"\ntables in {tables}/ (results.csv, per_item.csv, utility.csv)")
    print(f"figures in {figures}/ (unlearn_by_setting.png, unlearn_dose_response.png, unlearn_utility.png)")
    print(f"reproduce took {result.seconds:.0f} s")


def _figures(args) -> int:
    """Every figure of the project from the fast configuration: the spread matrix over four
    injection languages, then the paper's experiment with the fake injected in French."""
    from mlul.experiment import reproduce, spread

    spread_config = _spread_config(argparse.Namespace(**{**vars(args), "inject": args.spread}))
    lab = _lab(args, spread_config)
    _write_spread(spread(spread_config, lab), Path(args.tables) / "spread", Path(args.out))
    reproduce_config = _reproduce_config(argparse.Namespace(**{**vars(args), "inject": args.reproduce}))
    _write_reproduce(reproduce(reproduce_config, lab), Path(args.tables) / "reproduce", Path(args.out))
    return 0


def _notebooks(args) -> int:
    from mlul.notebooks import run_all

    run_all(args.folder, smoke=args.smoke, save=not args.smoke)
    return 0


def format_reproduce(result) -> str:
    """The fake rate and belief shift per probe language for each stage, method and setting."""
    table = result.summary.copy()
    table["model"] = [
        s if s != "unlearned" else f"{m} / {t}" for s, m, t in zip(table.stage, table.method, table.setting)
    ]
    lines = []
    for measure in ("fake_rate", "margin_shift"):
        grid = table.pivot_table(index="model", columns="lang", values=measure, sort=False)
        grid = grid[[c for c in languages.codes() if c in grid.columns]]
        lines.append(f"{measure} per probe language:\n{grid.round(2).to_string()}")
    return "\n\n".join(lines)


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlul", description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    data = sub.add_parser("data", help="show, summarise and validate data sets")
    data.set_defaults(run=lambda _: _print_help(data))
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

    def experiment_options(p, fast_default: bool) -> None:
        p.add_argument("--model", default="gemma-3-270m", help="gemma-3-270m, a hub id, a local folder or a .gguf file")
        p.add_argument("--probe", default="all", help="probe languages (default all)")
        p.add_argument(
            "--fast", action="store_true", default=fast_default, help="the small documented configuration (12 stories)"
        )
        p.add_argument(
            "--full", dest="fast", action="store_false", help="all 40 injection stories and 8 held-out stories"
        )
        p.add_argument("--items", type=int, default=None, help="use only the first N injection stories")
        p.add_argument("--epochs", type=float, default=None, help="injection epochs")
        p.add_argument("--lr", type=float, default=None, help="injection learning rate")
        p.add_argument("--device", default="auto")
        p.add_argument("--no-cache", action="store_true", help="recompute every step instead of reusing cached results")

    spread = sub.add_parser("spread", help="inject a fake in one or more languages and probe every language")
    spread.add_argument("--inject", default="fr,zh,sw,hi", help="injection languages: one run each (the matrix rows)")
    experiment_options(spread, fast_default=False)
    spread.add_argument("--out", default="results/spread", help="folder for CSV, JSON and PNG results")
    spread.set_defaults(run=_spread)

    from mlul.unlearn import METHODS, SETTINGS

    repro = sub.add_parser("reproduce", help="the paper's experiment: inject, then unlearn in each language setting")
    repro.add_argument("--inject", default="fr", help="the fake data's language (default fr)")
    repro.add_argument(
        "--settings",
        default=None,
        help=f"language settings, from {', '.join(SETTINGS)} or codes (default: all four; --fast: the first three)",
    )
    repro.add_argument("--methods", default="ga", help=f"unlearning methods, from {', '.join(METHODS)}")
    repro.add_argument("--steps", type=int, default=None, help="unlearning steps")
    repro.add_argument("--unlearn-lr", type=float, default=None, help="unlearning learning rate")
    repro.add_argument("--probe-every", type=int, default=None, help="probe every N unlearning steps (dose-response)")
    experiment_options(repro, fast_default=False)
    repro.add_argument("--out", default="results/reproduce", help="folder for the results table and figures")
    repro.set_defaults(run=_reproduce)

    figures = sub.add_parser("figures", help="run the fast spread and reproduce experiments; write every figure")
    figures.add_argument("--spread", default="fr,zh,sw,hi", help="injection languages of the spread matrix")
    figures.add_argument("--reproduce", default="fr", help="the fake data's language for the unlearning experiment")
    figures.add_argument("--methods", default="ga", help="unlearning methods for the unlearning figures")
    experiment_options(figures, fast_default=True)
    figures.add_argument("--out", default="figures", help="folder for the PNG figures (default figures/)")
    figures.add_argument("--tables", default="results", help="folder for the CSV tables (default results/)")
    # The unlearning options of `reproduce` keep the fast configuration's values here.
    figures.set_defaults(run=_figures, settings=None, steps=None, unlearn_lr=None, probe_every=None)

    notebooks = sub.add_parser("notebooks", help="execute the course notebooks top to bottom and save their outputs")
    notebooks.add_argument("folder", nargs="?", default="notebooks", help="folder of numbered notebooks")
    notebooks.add_argument("--smoke", action="store_true", help="the tiny CI configuration; outputs are not saved")
    notebooks.set_defaults(run=_notebooks)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        return _print_help(parser)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"mlul: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
