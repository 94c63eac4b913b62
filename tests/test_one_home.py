"""Every concept has one home: the objective names and the E-TSDM defaults are read from their modules."""

import argparse
import inspect

import pytest

from benchmarks.evidence import config as evidence_config
from benchmarks.evidence import exact_score
from diffusers_smd import cli, etsdm
from diffusers_smd.losses import OBJECTIVE_NAMES, OBJECTIVES, build_objective
from diffusers_smd.sampling import SCHEDULERS
from diffusers_smd.schedulers import ETSDM_VARIANTS
from diffusers_smd.training import TrainingConfig, UnconditionalTrainingConfig


def subcommand(name: str) -> argparse.ArgumentParser:
    (action,) = [a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return action.choices[name]


def option(parser: argparse.ArgumentParser, flag: str) -> argparse.Action:
    return parser._option_string_actions[flag]


def test_objective_names_come_from_the_registry(monkeypatch):
    assert OBJECTIVE_NAMES == tuple(OBJECTIVES) == ("vanilla", "smd", "smd-mixture")
    assert tuple(option(subcommand("train"), "--objective").choices) == OBJECTIVE_NAMES
    for name in OBJECTIVE_NAMES:
        assert OBJECTIVES[name].description in option(subcommand("train"), "--objective").help
        assert type(build_objective(name)) is OBJECTIVES[name]

    # A new objective registered in the one place appears in the flags' choices without any other edit.
    class Extra(OBJECTIVES["vanilla"]):
        name = "extra"
        description = "an objective registered in a test"

    monkeypatch.setitem(OBJECTIVES, "extra", Extra)
    assert UnconditionalTrainingConfig(objective="extra").objective_class is Extra
    assert not UnconditionalTrainingConfig(objective="extra").uses_smd_model


def test_the_etsdm_defaults_come_from_the_rule_module():
    defaults = (etsdm.DEFAULT_ETSDM_INTERVALS, None)
    assert (
        option(subcommand("train"), "--etsdm_intervals").default,
        option(subcommand("train"), "--etsdm_threshold").default,
    ) == defaults
    assert (TrainingConfig().etsdm_intervals, TrainingConfig().etsdm_threshold) == defaults
    for variant in ETSDM_VARIANTS.values():
        parameters = inspect.signature(variant.__init__).parameters
        assert (parameters["etsdm_intervals"].default, parameters["etsdm_threshold"].default) == defaults
    # the default threshold is resolved by the rule module, the same way for the training config and schedulers
    for num_train_timesteps in (50, 1000, 4000):
        expected = etsdm.default_etsdm_threshold(num_train_timesteps)
        assert (
            UnconditionalTrainingConfig(etsdm=True).etsdm_settings(num_train_timesteps).threshold == expected
        )
        scheduler = ETSDM_VARIANTS[next(iter(ETSDM_VARIANTS))](num_train_timesteps=num_train_timesteps)
        assert scheduler.etsdm_settings.threshold == expected


def test_the_evidence_studies_use_the_package_registries():
    assert set(evidence_config.SAMPLER_NAMES) <= set(SCHEDULERS)  # names of the one sampler registry
    assert set(exact_score.SAMPLERS) <= set(evidence_config.SAMPLER_LABELS)
    config = evidence_config.load_config("benchmarks/evidence/studies/smd_fewstep.yaml")
    config["models"]["vanilla-T4"]["objective"] = "smd-mixture-no-xi"  # not in the objective registry
    with pytest.raises(
        ValueError, match=r"models\.vanilla-T4\.objective must be one of \('vanilla', 'smd', 'smd-mixture'\)"
    ):
        evidence_config.validate_config(config)
