//! The estimator against simulated links (`link`): exact, seeded, no wall clock.

mod link;
mod scenarios;
