//! Black-box tests over HTTP, one module per SPEC section. One binary, so it links once.
// A failed unwrap is a failed test here, and the helpers are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod binary;
mod dedup;
mod docs;
mod events_interop;
mod faults;
mod helpers;
mod lifecycle;
mod limits;
mod media;
mod mock_callbacks;
mod operations;
mod queue;
mod redis_server;
mod retries;
mod sends;
mod shared_dedup;
mod shared_lifecycle;
mod slow_redis;
mod templates;
