//! The operator's commands beside `serve`: `trousseau check` walks what
//! `serve` needs against Vault ([`check`]); `trousseau probe` talks to a
//! running plugin exactly as kube-apiserver does ([`probe`], also the
//! client of the tests and the benchmark).

pub mod check;
pub mod probe;
