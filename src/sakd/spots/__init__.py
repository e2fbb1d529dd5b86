"""Where to distil: spot selectors, the policy, straight-through Gumbel and the routed network."""

from sakd.seeding import SeededGenerator
from sakd.spots.gumbel import sample_gumbel, straight_through_gumbel
from sakd.spots.policy import SpotPolicy
from sakd.spots.routing import RoutedNetwork, make_adaptors
from sakd.spots.selectors import (
    AdaptiveSelector,
    AntiSelector,
    FixedSelector,
    RandomSelector,
    SelectorInput,
    SpotSelection,
    SpotSelector,
    build_selector,
    routing_objective,
)

__all__ = [
    "AdaptiveSelector",
    "AntiSelector",
    "FixedSelector",
    "RandomSelector",
    "RoutedNetwork",
    "SeededGenerator",
    "SelectorInput",
    "SpotPolicy",
    "SpotSelection",
    "SpotSelector",
    "build_selector",
    "make_adaptors",
    "routing_objective",
    "sample_gumbel",
    "straight_through_gumbel",
]
