//! The request phases, in order. Each file says what belongs in its phase.
//!
//! canonicalise (`crate::canonical`) → route → authenticate → authorize → rate-limit →
//! forward → audit (`crate::gateway`). A phase either passes the request on with what it
//! learned or refuses it with a [`crate::deny::Deny`]; it never writes a response itself.

pub mod authenticate;
pub mod authorize;
pub mod forward;
pub mod headers;
pub mod rate_limit;
pub mod route;
