"""Tests of geofence.policy, the engine's decisions and the bundled policy presets."""
