//! The estimator against simulated links (`link`): exact, seeded, no wall clock; and against
//! arbitrary inputs (`robust`).

mod link;
mod robust;
mod scenarios;
