//! `sys/` endpoints, for `check` only: each node's health.

use std::time::Instant;

use super::answer::node_health;
use super::transport::{Call, Method};
use super::{NodeHealth, VaultClient, VaultError};

/// One node's answer to `sys/health`.
pub struct NodeAnswer {
    /// The node, as configured.
    pub addr: String,
    pub health: Result<NodeHealth, VaultError>,
}

impl VaultClient {
    /// `GET /v1/sys/health` of every node, without a token, for `check`:
    /// each node's answer (`standbyok` makes a standby answer 200).
    pub fn health_of_each(&self, deadline: Instant) -> Vec<NodeAnswer> {
        let c = Call {
            op: "health",
            method: Method::Get,
            path: "sys/health?standbyok=true&perfstandbyok=true",
            body: None,
            token: None,
            batch: false,
        };
        self.inner
            .nodes
            .iter()
            .map(|node| {
                let health = self.attempt(node, &c, deadline).map(|v| node_health(&v));
                NodeAnswer {
                    addr: node.addr.clone(),
                    health,
                }
            })
            .collect()
    }
}
