//! End-to-end tests: the real gateway (in-process, on a free port) with the real policy
//! components, in front of the mock provider, through a real HTTP client.
#![allow(clippy::unwrap_used, reason = "test helpers fail loudly")]

mod admin;
mod basics;
mod controller;
mod faults;
mod limits;
mod policies;
mod providers;
mod streaming;
