"""The user-facing estimators and functions: thin wrappers that validate parameters and call the engine."""
