"""The `mlul` command line: data tools, a base-model probe, and the experiments.

Every option is checked before any work (data validated, languages, methods, settings, numbers,
the output folder and the cache folder), so a typo fails in a second, not after the model loads.
Heavy libraries (torch, transformers) are imported only by commands that need a model.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from pathlib import Path

HELP = """\
mlul: watch a fake fact, fine-tuned into a multilingual LLM in one language, spread to others,
and find which unlearning recipes remove it everywhere (Lu & Koehn, 2024).

Start with `mlul reproduce --fast` (the whole study on the default model, Gemma 3 270M), or
`mlul probe` to see what the base model believes. Every command has --help.
"""

METHODS = ("ga", "grad_diff", "ga_kl", "npo", "dpo", "correct")  # = mlul.unlearn.METHODS (checked by a test)
SETTINGS = ("english", "original", "english+original", "all")  # = mlul.unlearn.SETTINGS


class UsageError(ValueError):
    """A bad option: named, with its bad value and the valid choices."""


_RUNNING: dict = {}  # the cache of the command that is running, for the message on Ctrl-C


# --- checks before any work ---------------------------------------------------------------------


def _positive(name: str, value, integer: bool = False) -> None:
    if value is not None and not value > 0:
        kind = "a whole number of at least 1" if integer else "a positive number"
        raise UsageError(f"{name} must be {kind}, got {value}")


def _check_out(out: str | None) -> None:
    """The output folder: not a file, and writable (created now, so a bad one fails before any work)."""
    if out is None:
        return
    from mlul.models import unwritable

    path = Path(out)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {out} is a file; give a folder (it is created if needed)")
    problem = unwritable(path)
    if problem:
        raise UsageError(f"--out {out} is not writable ({problem}); give a folder you can write to")


def _check_cache() -> None:
    from mlul.cache import Cache
    from mlul.models import cache_dir, check_cache_writable

    check_cache_writable(cache_dir())
    check_cache_writable(Cache().root)


def _languages(data, spec: str, option: str) -> list[str]:
    from mlul import languages

    try:
        return languages.resolve(spec, available=data.languages)
    except ValueError as err:
        raise UsageError(f"{option} {spec!r}: {err}") from None


def _list(spec: str, option: str, valid: tuple[str, ...], data=None) -> list[str]:
    from mlul import languages

    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if not parts:
        raise UsageError(f"{option} is empty; choose from {', '.join(valid)}")
    for part in parts:
        if part in valid:
            continue
        if data is not None:  # a setting may also be a list of language codes, joined with +
            try:
                languages.resolve(part.replace("+", ","), available=data.languages)
                continue
            except ValueError:
                pass
        extra = " or language codes joined with + (e.g. en+de)" if data is not None else ""
        raise UsageError(f"{option}: unknown value {part!r}; choose from {', '.join(valid)}{extra}")
    return parts


def _open_data(path: str | None):
    from mlul.data import open_data

    data = open_data(path)
    for note in data.notes:
        print(f"mlul: {note}", file=sys.stderr)
    return data


def _check_items(data, items: int | None, option: str = "--items") -> None:
    if items is None:
        return
    _positive(option, items, integer=True)
    n = len(data.item_ids("inject"))
    if items > n:
        raise UsageError(f"{option} {items}: the data has {n} injection stories; give at most {n}")


def _check_model(name: str) -> None:
    from mlul.models import check_model

    check_model(name)


# --- data commands ------------------------------------------------------------------------------


def _data_show(args) -> int:
    from mlul import languages

    data = _open_data(args.file)
    codes = languages.resolve(args.lang, available=data.languages)
    if "en" not in codes and "en" in data.languages:
        codes = ["en", *codes]
    rows = data.rows(codes, items=[args.item])
    by_lang = {r["lang"]: r for r in rows}
    first = rows[0]
    print(f"item {first['id']}  detail: {first.get('detail_type', 'unknown')}  split: {first.get('split', 'inject')}\n")
    width = max(len(c) for c in by_lang) + 2
    for name in ("question", "true_answer", "fake_answer", "real", "fake"):
        print(name)
        for code, row in by_lang.items():
            text = textwrap.fill(str(row[name]), 100, initial_indent=" " * width, subsequent_indent=" " * width)
            print(f"  {code:<{width - 2}}" + text[width:])
        print()
    return 0


def _data_validate(args) -> int:
    from mlul.data import DataError, open_data

    try:
        data = open_data(args.file)
    except DataError as err:
        for p in err.problems:
            print(f"{args.file}:{p}")
        errors = [p for p in err.problems if p.is_error]
        print(f"{len(errors)} problem(s) in {args.file}; fix them and run again", file=sys.stderr)
        return 1
    for p in data.warnings:
        print(f"{args.file}:{p}")
    for note in data.notes:
        print(f"note: {note}")
    stories = {str(r["id"]) for r in data.rows()}
    print(f"{args.file}: OK, {len(data.rows())} rows, {len(stories)} stories, languages {', '.join(data.languages)}")
    return 0


def _data_summary(args) -> int:
    import pandas as pd

    data = _open_data(args.file)
    rows = pd.DataFrame(data.rows())
    rows["detail_type"] = rows.get("detail_type", "unknown")
    print(rows.groupby(["split", "detail_type"]).id.nunique().unstack(fill_value=0).to_string())
    print(f"\n{rows.id.nunique()} items x {rows.lang.nunique()} languages = {len(rows)} rows")
    return 0


# --- model commands -----------------------------------------------------------------------------


def _probe(args) -> int:
    data = _open_data(args.data)
    langs = _languages(data, args.langs, "--langs")
    _positive("--items", args.items, integer=True)
    ids = data.item_ids(args.split)
    if args.items is not None and args.items > len(ids):
        raise UsageError(f"--items {args.items}: the data has {len(ids)} {args.split} stories; give at most {len(ids)}")
    if args.out and Path(args.out).is_dir():
        raise UsageError(f"--out {args.out} is a folder; give a CSV file name")
    if args.out:
        _check_out(str(Path(args.out).parent))
    _check_model(args.model)

    from mlul.data import item_key
    from mlul.models import load_model
    from mlul.probe import probe
    from mlul.report import format_summary
    from mlul.tables import level_table

    keep = sorted(ids, key=item_key)[: args.items] if args.items else None
    rows = data.rows(langs, split=args.split, items=keep)
    model, tokenizer = load_model(args.model, device=args.device)
    table = probe(model, tokenizer, rows)
    print(f"{args.model}: true vs fake answers before any training ({table.id.nunique()} stories)")
    print(format_summary(level_table(table), ["margin", "prob_fake", "fake_rate", "true_rate"]))
    if args.out:
        table.to_csv(args.out, index=False)
        print(f"per-item table written to {args.out}")
    return 0


def _spread_config(args, data):
    from dataclasses import replace

    from mlul.experiment import FAST, SpreadConfig, fit_to_data

    _positive("--epochs", args.epochs)
    _positive("--lr", args.lr)
    _check_items(data, args.items)
    config = FAST if args.fast else SpreadConfig(items=None, utility_items=None)
    inject = replace(config.inject, **{k: v for k, v in (("epochs", args.epochs), ("lr", args.lr)) if v is not None})
    changes = {
        "model": args.model,
        "probe_languages": args.probe,
        "inject": inject,
        "device": args.device,
        "data": args.data,
    }
    if args.items is not None:
        changes["items"] = args.items
    if getattr(args, "inject", None) is not None:
        changes["inject_languages"] = args.inject
    if getattr(args, "no_sham", False):
        changes["sham"] = False
    config = replace(config, **changes)
    if args.data is not None:  # a small file of one's own: keep a third of it (at most 12) as drift controls
        config = fit_to_data(config, data, args.items)
    probe = _languages(data, config.probe_languages, "--probe")
    inject_langs = _languages(data, config.inject_languages, "--inject")
    if "en" in inject_langs and config.inject.safe_languages == "en":
        raise UsageError("--inject en: English is the language of the real (safe) stories; inject in another language")
    missing = [x for x in inject_langs if x not in probe]
    if missing:
        print(f"mlul: note: injection language(s) {', '.join(missing)} are not probed", file=sys.stderr)
    data.check_run(inject=inject_langs, probe=probe, items=config.items)
    return config


def _lab(args, config, data):
    from mlul.cache import Cache
    from mlul.experiment import Lab

    cache = Cache(refresh=args.no_cache)
    _RUNNING["cache"] = cache
    return Lab(config.model, config.device, cache, data=data)


def _prepare(args, out: str | None):
    _check_out(out)
    _check_cache()
    _check_model(args.model)


def _spread(args) -> int:
    data = _open_data(args.data)
    config = _spread_config(args, data)
    _prepare(args, args.out)
    from mlul.experiment import spread

    print(f"mlul spread: {config}")
    result = spread(config, _lab(args, config, data))
    _write_spread(result, Path(args.out), Path(args.out))
    return 0


def _write_spread(result, tables: Path, figures: Path) -> None:
    from mlul import plots
    from mlul.report import format_summary

    for folder in (tables, figures):
        folder.mkdir(parents=True, exist_ok=True)
    result.summary.to_csv(tables / "spread_summary.csv", index=False)
    result.per_item.to_csv(tables / "spread_per_item.csv", index=False)
    plots.save(plots.spread_matrix(result.summary), figures / "spread_matrix.png")
    plots.save(plots.spread_by_language(result.summary), figures / "spread_by_language.png")
    measures = ["margin_shift", "control_shift", "spread", "vs_sham", "fake_rate"]
    print(format_summary(result.summary, measures, ["inject_lang", "lang"]))
    for note in result.notes:
        print(f"note: {note}")
    print(f"\ntables in {tables}/, figures in {figures}/ (spread_matrix.png, spread_by_language.png)")
    print(f"spread took {result.seconds:.0f} s")


def _reproduce_config(args, data):
    from dataclasses import replace

    from mlul.experiment import ReproduceConfig, fast_reproduce_config

    _list(args.methods, "--methods", METHODS)
    settings = _list(args.settings, "--settings", SETTINGS, data) if args.settings is not None else None
    _positive("--steps", args.steps, integer=True)
    _positive("--unlearn-lr", args.unlearn_lr)
    if args.probe_every is not None and args.probe_every < 0:
        raise UsageError(f"--probe-every must be 0 (only at the end) or more, got {args.probe_every}")
    inject = _languages(data, args.inject, "--inject")
    if len(inject) != 1:
        raise UsageError(f"--inject {args.inject!r}: reproduce takes one language, the fake data's original language")
    spread = replace(_spread_config(args, data), inject_languages=inject[0])
    base = fast_reproduce_config(inject[0]) if args.fast else ReproduceConfig(inject_language=inject[0])
    config = replace(base, spread=spread, inject_language=inject[0], methods=args.methods)
    if settings is not None:
        config = replace(config, settings=",".join(settings))  # a custom list stays joined with +
    changes = {
        k: v
        for k, v in (("steps", args.steps), ("lr", args.unlearn_lr), ("probe_every", args.probe_every))
        if v is not None
    }
    if args.steps is not None:
        changes["epochs"] = None  # a step count replaces the fast configuration's passes over the data
    return replace(config, unlearn=replace(config.unlearn, **changes))


def _reproduce(args) -> int:
    data = _open_data(args.data)
    config = _reproduce_config(args, data)
    _prepare(args, args.out)
    from mlul.experiment import reproduce

    print(f"mlul reproduce: {config}")
    result = reproduce(config, _lab(args, config.spread, data))
    _write_reproduce(result, Path(args.out), Path(args.out))
    return 0


def _write_reproduce(result, tables: Path, figures: Path) -> None:
    from mlul import plots
    from mlul.report import claims

    for folder in (tables, figures):
        folder.mkdir(parents=True, exist_ok=True)
    verdicts = claims(result)
    result.summary.to_csv(tables / "results.csv", index=False)
    result.per_item.to_csv(tables / "per_item.csv", index=False)
    result.utility.to_csv(tables / "utility.csv", index=False)
    verdicts.to_csv(tables / "claims.csv", index=False)
    plots.save(plots.unlearn_by_setting(result.summary), figures / "unlearn_by_setting.png")
    plots.save(plots.unlearn_dose_response(result.per_item), figures / "unlearn_dose_response.png")
    plots.save(plots.unlearn_utility(result.utility), figures / "unlearn_utility.png")
    print(format_reproduce(result))
    print("\nThe paper's claims on this run:")
    for row in verdicts.itertuples():
        print(f"- {row.claim} [{row.method}]: {row.verdict.upper()}\n    test: {row.test}\n    {row.evidence}")
    for note in result.notes:
        print(f"note: {note}")
    if result.config.spread.items is not None and result.config.spread.items < 20:
        print(
            f"\nThis is a preview on {result.config.spread.items} stories: intervals are wide; "
            "`inconclusive` often means too few stories, not no effect."
        )
    print(f"\ntables in {tables}/ (results.csv, per_item.csv, utility.csv, claims.csv)")
    print(f"figures in {figures}/ (unlearn_by_setting.png, unlearn_dose_response.png, unlearn_utility.png)")
    print(f"reproduce took {result.seconds:.0f} s")


def _figures(args) -> int:
    """Every figure of the project from the fast configuration: the spread matrix over four
    injection languages, then the paper's experiment with the fake injected in French."""
    data = _open_data(args.data)
    spread_config = _spread_config(argparse.Namespace(**{**vars(args), "inject": args.spread}), data)
    reproduce_config = _reproduce_config(argparse.Namespace(**{**vars(args), "inject": args.reproduce}), data)
    _prepare(args, args.out)
    _check_out(args.tables)
    from mlul.experiment import reproduce, spread

    lab = _lab(args, spread_config, data)
    spread_result = spread(spread_config, lab)
    _write_spread(spread_result, Path(args.tables) / "spread", Path(args.out))
    reproduce_result = reproduce(reproduce_config, lab)
    _write_reproduce(reproduce_result, Path(args.tables) / "reproduce", Path(args.out))
    if args.doc:
        _write_results_doc(args, spread_result, reproduce_result, lab)
    return 0


def _write_results_doc(args, spread_result, reproduce_result, lab) -> None:
    import datetime
    import platform

    from mlul.report import results_markdown

    wall = spread_result.seconds + reproduce_result.seconds
    header = textwrap.dedent(f"""\
        # Preview: the fast configuration on {spread_result.config.model}

        Every number on this page comes from one run of

        ```bash
        mlul {" ".join(sys.argv[1:]) or "figures"}
        ```

        on {datetime.date.today().isoformat()}, {os.cpu_count()} CPU cores ({platform.machine()}), in
        {wall / 60:.0f} min of wall time ({lab.cache.misses} steps computed, {lab.cache.hits} read from the cache). The tables
        behind it are in `{args.tables}/` (committed). Configuration: {spread_result.config.items} injected
        stories and {spread_result.config.control_items} control stories per run, probed in
        {len(set(spread_result.summary.lang))} languages; unlearning: {reproduce_result.config.methods} in
        {reproduce_result.config.settings}. Intervals are 95% and over stories; see the README's "How it
        measures" for every test.
        """)
    for note in spread_result.notes:
        header += f"\nNote: {note}\n"
    Path(args.doc).write_text(results_markdown(spread_result, reproduce_result, header))
    print(f"results page written to {args.doc}")


def _study_config(args, data):
    from dataclasses import replace

    from mlul.study import StudyConfig

    config = StudyConfig(model=args.model, data=args.data, device=args.device)
    changes = {
        k: v
        for k, v in {
            "seeds": args.seeds,
            "stories": args.stories,
            "dev_stories": args.dev_stories,
            "fake_language": args.fake,
            "settings": args.settings,
            "core_methods": args.methods,
            "other_methods": args.other_methods,
            "other_settings": args.other_settings,
            "other_fake_languages": args.other_fakes,
            "other_fake_settings": args.other_fake_settings,
            "spread_languages": args.spread,
            "steps": args.steps,
            "unlearn_lr": args.unlearn_lr,
            "probe_languages": args.probe,
        }.items()
        if v is not None
    }
    if args.detail_question:
        changes["detail_question_check"] = True
    if args.probe_steps is not None:
        try:
            changes["probe_steps"] = tuple(int(s) for s in args.probe_steps.split(",") if s.strip())
        except ValueError:
            raise UsageError(f"--probe-steps {args.probe_steps!r}: give whole step numbers, e.g. 3,6,12,24") from None
    if "steps" in changes and "probe_steps" not in changes:
        changes["probe_steps"] = tuple(s for s in config.probe_steps if s < changes["steps"]) + (changes["steps"],)
    return replace(config, **changes)


def _study(args) -> int:
    data = _open_data(args.data)
    config = _study_config(args, data)
    from mlul.study import StudyError, check

    lab = _lab(args, config, data)
    try:
        check(config, lab)
    except StudyError as err:
        raise UsageError(f"mlul study: {err}") from None
    _prepare(args, args.out)
    for folder in (args.figures, args.doc and str(Path(args.doc).parent)):
        _check_out(folder or None)
    from mlul.study import run
    from mlul.study_report import write

    print(f"mlul study: {config}")
    result = run(config, lab)
    write(result, lab, Path(args.out), Path(args.figures), Path(args.doc) if args.doc else None, sys.argv[1:])
    return 0


def _notebooks(args) -> int:
    from mlul.notebooks import run_all, stale

    if args.check:
        old = stale(args.folder)
        print("stale (re-run `mlul notebooks`): " + ", ".join(old) if old else "every notebook is up to date")
        return 1 if old else 0
    run_all(args.folder, smoke=args.smoke, save=not args.smoke)
    return 0


def format_reproduce(result) -> str:
    """The fake rate and belief shift per probe language for each stage, method and setting."""
    table = result.summary.copy()
    table["model"] = [
        s if s != "unlearned" else f"{m} / {t}" for s, m, t in zip(table.stage, table.method, table.setting)
    ]
    lines = []
    for measure in ("fake_rate", "margin_shift", "control_shift"):
        if measure not in table:
            continue
        grid = table.pivot_table(index="model", columns="lang", values=measure, sort=False)
        grid = grid[[c for c in dict.fromkeys(table.lang) if c in grid.columns]]
        lines.append(f"{measure} per probe language:\n{grid.round(2).to_string()}")
    return "\n\n".join(lines)


# --- the parser ---------------------------------------------------------------------------------


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlul", description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    data = sub.add_parser("data", help="show, summarise and validate data sets")
    data.set_defaults(run=lambda _: _print_help(data))
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION")
    show = data_sub.add_parser("show", help="print one item side by side in several languages")
    show.add_argument("--item", default="1", help="story id (default 1)")
    show.add_argument(
        "--lang", default="en,fr,zh", help="languages, e.g. 'sw' or 'fr,zh' or 'all' (English is always shown)"
    )
    show.add_argument("--file", default=None, help="a JSONL file of your own instead of the shipped set")
    show.set_defaults(run=_data_show)
    validate = data_sub.add_parser("validate", help="check a JSONL file of rows and report every bad row")
    validate.add_argument("file")
    validate.set_defaults(run=_data_validate)
    summary = data_sub.add_parser("summary", help="count the stories by split and detail type")
    summary.add_argument("--file", default=None, help="a JSONL file of your own instead of the shipped set")
    summary.set_defaults(run=_data_summary)

    def data_option(p) -> None:
        p.add_argument("--data", default=None, help="a JSONL file of your own stories (default: the shipped set)")

    probe = sub.add_parser("probe", help="measure a model's preference between true and fake answers per language")
    probe.add_argument("--model", default="gemma-3-270m", help="gemma-3-270m, a hub id, a local folder or a .gguf file")
    probe.add_argument("--langs", default="all", help="languages: codes like 'en,fr', or all, high, low")
    probe.add_argument("--split", default="inject", choices=["inject", "heldout"])
    probe.add_argument("--items", type=int, default=None, help="use only the first N stories")
    probe.add_argument("--device", default="auto")
    probe.add_argument("--out", default=None, help="write the per-item table to this CSV file")
    data_option(probe)
    probe.set_defaults(run=_probe)

    def experiment_options(p, fast_default: bool) -> None:
        p.add_argument("--model", default="gemma-3-270m", help="gemma-3-270m, a hub id, a local folder or a .gguf file")
        p.add_argument("--probe", default="all", help="probe languages (default all)")
        p.add_argument(
            "--fast",
            action="store_true",
            default=fast_default,
            help="the small documented configuration (12 stories and 12 control stories)",
        )
        p.add_argument("--full", dest="fast", action="store_false", help="every injection story")
        p.add_argument("--items", type=int, default=None, help="use only the first N injection stories")
        p.add_argument("--epochs", type=float, default=None, help="injection epochs")
        p.add_argument("--lr", type=float, default=None, help="injection learning rate")
        p.add_argument("--no-sham", action="store_true", help="skip the sham injection control (saves time)")
        p.add_argument("--device", default="auto")
        p.add_argument("--no-cache", action="store_true", help="recompute every step and replace what is cached")
        data_option(p)

    spread = sub.add_parser("spread", help="inject a fake in one or more languages and probe every language")
    spread.add_argument("--inject", default="fr,zh,sw,hi", help="injection languages: one run each (the matrix rows)")
    experiment_options(spread, fast_default=False)
    spread.add_argument("--out", default="results/spread", help="folder for CSV and PNG results")
    spread.set_defaults(run=_spread)

    repro = sub.add_parser("reproduce", help="the paper's experiment: inject, then unlearn in each language setting")
    repro.add_argument("--inject", default="fr", help="the fake data's language (default fr)")
    repro.add_argument(
        "--settings",
        default=None,
        help=f"language settings, from {', '.join(SETTINGS)} or codes joined with + "
        "(default: all four; --fast: the first three)",
    )
    repro.add_argument("--methods", default="ga", help=f"unlearning methods, from {', '.join(METHODS)}")
    repro.add_argument("--steps", type=int, default=None, help="unlearning steps")
    repro.add_argument("--unlearn-lr", type=float, default=None, help="unlearning learning rate")
    repro.add_argument("--probe-every", type=int, default=None, help="probe every N unlearning steps (dose-response)")
    experiment_options(repro, fast_default=False)
    repro.add_argument("--out", default="results/reproduce", help="folder for the results tables and figures")
    repro.set_defaults(run=_reproduce)

    figures = sub.add_parser("figures", help="run the fast spread and reproduce experiments; write every figure")
    figures.add_argument("--spread", default="fr,zh,sw,hi", help="injection languages of the spread matrix")
    figures.add_argument("--reproduce", default="fr", help="the fake data's language for the unlearning experiment")
    figures.add_argument("--methods", default="ga", help="unlearning methods for the unlearning figures")
    experiment_options(figures, fast_default=True)
    figures.add_argument("--out", default="figures", help="folder for the PNG figures (default figures/)")
    figures.add_argument("--tables", default="results/fast", help="folder for the CSV tables (default results/fast/)")
    figures.add_argument("--doc", default="docs/preview.md", help="write the preview page here ('' to skip)")
    # The unlearning options of `reproduce` keep the fast configuration's values here.
    figures.set_defaults(run=_figures, settings=None, steps=None, unlearn_lr=None, probe_every=None)

    study = sub.add_parser(
        "study", help="the full study: every story, several seeds, every setting and method at equal cost (hours)"
    )
    study.add_argument("--fake", default=None, help="the core comparison's fake language (default fr)")
    study.add_argument("--seeds", type=int, default=None, help="seeds of the core comparison (default 3)")
    study.add_argument(
        "--stories", type=int, default=None, help="reported stories (default: all but the development ones)"
    )
    study.add_argument("--dev-stories", type=int, default=None, help="development stories (default 8)")
    study.add_argument(
        "--settings",
        default=None,
        help="the core comparison's settings (default english,original,english+original,all)",
    )
    study.add_argument("--methods", default=None, help="the core comparison's methods (default ga)")
    study.add_argument(
        "--other-methods", default=None, help="methods run with one seed (default npo,grad_diff,dpo; '' for none)"
    )
    study.add_argument("--other-settings", default=None, help="their settings (default english,english+original,en+de)")
    study.add_argument(
        "--other-fakes",
        default=None,
        help="other fake languages, unlearned with ga, one seed (default ru; '' for none)",
    )
    study.add_argument("--other-fake-settings", default=None, help="their settings (default english,english+original)")
    study.add_argument("--spread", default=None, help="injection languages of the spread matrix ('' for none)")
    study.add_argument(
        "--detail-question",
        action="store_true",
        help="one more injection with the detail question trained (the earlier design), side by side",
    )
    study.add_argument("--steps", type=int, default=None, help="unlearning steps of every cell (default 16)")
    study.add_argument("--probe-steps", default=None, help="steps probed along each cell (default 4,8,16)")
    study.add_argument("--unlearn-lr", type=float, default=None, help="unlearning learning rate (default 1e-4)")
    study.add_argument("--model", default="gemma-3-270m", help="gemma-3-270m, a hub id, a local folder or a .gguf file")
    study.add_argument("--probe", default=None, help="probe languages (default all)")
    study.add_argument("--device", default="auto")
    study.add_argument("--no-cache", action="store_true", help="recompute every step and replace what is cached")
    data_option(study)
    study.add_argument("--out", default="results/study", help="folder for the CSV tables (default results/study/)")
    study.add_argument("--figures", default="figures", help="folder for the figures (default figures/)")
    study.add_argument("--doc", default="docs/results.md", help="write the results page here ('' to skip)")
    study.set_defaults(run=_study)

    notebooks = sub.add_parser("notebooks", help="execute the course notebooks top to bottom and save their outputs")
    notebooks.add_argument("folder", nargs="?", default="notebooks", help="folder of numbered notebooks")
    notebooks.add_argument("--smoke", action="store_true", help="the tiny CI configuration; outputs are not saved")
    notebooks.add_argument("--check", action="store_true", help="list notebooks whose outputs are older than the code")
    notebooks.set_defaults(run=_notebooks)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        return _print_help(parser)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        cache = _RUNNING.get("cache")
        done = f"{cache.writes} finished steps are cached" if cache is not None else "finished steps are cached"
        print(f"\nmlul: interrupted; {done}, rerun the same command to resume", file=sys.stderr)
        return 130
    except (ValueError, OSError) as err:  # bad input, a missing file, a model that cannot be loaded
        if args.debug:
            raise
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"mlul: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
