//! `noop`: a policy that takes part in no phase. `weir build` plugs it into the unused policy
//! slots of the edge gateway composition; it is also the smallest complete policy.

use weir_policy_sdk::{Phase, Policy};

/// Accepts an empty configuration (`{}`) only.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {}

#[derive(Debug)]
pub struct Noop;

impl Policy for Noop {
    type Config = Config;
    const NAME: &'static str = "noop";
    const VERSION: &'static str = "0.1.0";
    const PHASES: &'static [Phase] = &[];
}

weir_policy_sdk::export_policy!(Noop);
