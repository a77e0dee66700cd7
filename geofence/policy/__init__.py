"""Policies: a declarative, dated, cited TOML format, validated when loaded.

See ``docs/policy.md`` for the format and the evaluation semantics.
"""

from geofence.policy.model import Policy, Rule, SubjectCondition
from geofence.policy.parse import load_policy, parse_policy, preset_names

__all__ = ["Policy", "Rule", "SubjectCondition", "load_policy", "parse_policy", "preset_names"]
