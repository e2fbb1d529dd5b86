"""Typed run configuration: YAML recipes + ``KEY=VALUE`` overrides, validated into pydantic models.

``schema`` (the models), ``recipes`` (``base:`` chains, overrides, who set each key), ``weights``
(the published tables and their resolution), ``stored`` (renamed keys, dumps) and ``validate``
(recipe → resolved :class:`RunConfig`, one-line errors). The names below are the package's API.
"""

from sakd.config.recipes import (
    MAX_VALUES,
    RECIPES_PACKAGE,
    Recipe,
    apply_overrides,
    deep_merge,
    list_recipes,
    load_recipe,
)
from sakd.config.schema import (
    OBJECT_PREFIX,
    SPOT_MODES,
    DataConfig,
    DistillerConfig,
    LossConfig,
    ModelConfig,
    OptimizerConfig,
    RunConfig,
    ScheduleConfig,
    SpotsConfig,
    TeacherConfig,
)
from sakd.config.stored import RENAMED_KEYS, dump_config, upgrade_renamed_keys
from sakd.config.validate import (
    RESUME_IGNORED_KEYS,
    config_differences,
    load_config,
    validate_config,
)
from sakd.config.weights import (
    KD_DISTILLER,
    KD_TEMPERATURE_KEY,
    PRESET_RUN_KEYS,
    PUBLISHED_FILE,
    PUBLISHED_KEYS,
    ResolvedWeights,
    published_weights,
    resolve_weights,
    source_of,
)

__all__ = [
    "MAX_VALUES",
    "KD_DISTILLER",
    "KD_TEMPERATURE_KEY",
    "OBJECT_PREFIX",
    "PRESET_RUN_KEYS",
    "PUBLISHED_FILE",
    "PUBLISHED_KEYS",
    "RECIPES_PACKAGE",
    "RENAMED_KEYS",
    "RESUME_IGNORED_KEYS",
    "SPOT_MODES",
    "DataConfig",
    "DistillerConfig",
    "LossConfig",
    "ModelConfig",
    "OptimizerConfig",
    "Recipe",
    "ResolvedWeights",
    "RunConfig",
    "ScheduleConfig",
    "SpotsConfig",
    "TeacherConfig",
    "apply_overrides",
    "config_differences",
    "deep_merge",
    "dump_config",
    "list_recipes",
    "load_config",
    "load_recipe",
    "published_weights",
    "resolve_weights",
    "source_of",
    "upgrade_renamed_keys",
    "validate_config",
]
