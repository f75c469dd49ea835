//! The operator's side: HTTP endpoints for probes and scrapers
//! ([`http`]). They see the plugin through a small trait, not its gRPC
//! state.

pub mod http;
