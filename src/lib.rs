//! End-to-end tests of Cohort live in `tests/`.
