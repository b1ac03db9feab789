"""Each seed's injection of the study, read from the result cache: the belief shift from base in
the fake's language and in English (95% t interval over the injected stories), the fake rate and
English perplexity against the base model's. A seed not yet injected is computed (minutes).

    python scripts/study_injections.py --seeds 2
"""

import argparse
from dataclasses import replace

from mlul import study
from mlul.experiment import Lab
from mlul.stats import shift_test
from mlul.tables import with_shifts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=study.StudyConfig().seeds)
    args = parser.parse_args()
    config = study.StudyConfig()
    lab = Lab(config.model, config.device)
    chosen, _ = study.choose_injection(config, lab, progress=lambda _: None)
    _, reported = study.story_split(config, lab)
    fake = config.fake_language
    for seed in range(args.seeds):
        injected_ids, control = study.seed_split(reported, seed, config.control_share)
        spread = study.spread_config(config, injected_ids, control)
        inject = replace(chosen, fake_languages=fake, seed=seed)
        after = lab.probe_injected(spread, inject)
        shifted = with_shifts(after[after.role == "injected"], lab.probe_base(spread))
        ppl = lab.utility_injected(spread, inject).set_index("lang").perplexity
        ratio = ppl["en"] / lab.utility_base(spread).set_index("lang").perplexity["en"]
        for lang in dict.fromkeys([fake, "en"]):
            own = shifted[shifted.lang == lang]
            test = shift_test(own.margin_shift.to_numpy())
            rate = own.says_fake.mean()
            print(
                f"seed {seed}, {lang}: shift {test['mean']:+.1f} [{test['lo']:+.1f}, {test['hi']:+.1f}] "
                f"(two-sided p {test['p']:.3g}), fake rate {rate:.2f}, English perplexity x{ratio:.2f} of base"
            )


if __name__ == "__main__":
    main()
