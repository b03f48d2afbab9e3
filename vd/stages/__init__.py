"""Pipeline stages: pure functions of their inputs and parameters, memoised in the cache."""
