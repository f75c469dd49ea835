//! The end-to-end suite: a real kube-apiserver and etcd (built from their
//! Go modules by `scripts/e2e.sh`), the release plugin and a real OpenBao,
//! all on loopback, configured from the files shipped in `deploy/`. Each
//! check starts its own control plane ([`stack::Stack`]) and stops every
//! process it started by pid. Run it with `scripts/e2e.sh`, which builds
//! the binaries this needs and ends with `e2e: N passed, N failed`.

#[path = "../integration/harness/mod.rs"]
mod harness;
mod kube;
mod kubeadm;
mod node;
mod shipped;
mod stack;

mod at_rest;
mod cold_start;
mod health;
mod local_kek;
mod manifests;
mod migration;
mod plugin_states;
mod podman;
mod rotation;
mod static_pod;
mod v1;

use harness::dek;

/// Secret values for a check: random bytes, so that finding one in etcd
/// (in any encoding) can only mean it was stored in the clear.
pub fn secret_values(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|_| dek()).collect()
}
