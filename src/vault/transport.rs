//! Getting one call to Vault and its answer back: trying the configured
//! nodes in order of preference within the call's deadline, following a
//! standby's 307 one hop, and reading a bounded body. Everything above this
//! file deals in paths and JSON; everything below it is ureq.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::answer::{error_text_for, looks_encoded};
use super::error::{fails_over, transport_error};
use super::{parse_addr, VaultClient, VaultError};
use crate::limits::{
    CALLER_POLL, MAX_VAULT_RESPONSE, VAULT_FAILOVER_RESERVE, VAULT_MAX_LOCATION, VAULT_MIN_ATTEMPT, VAULT_ROUND_PAUSE,
};
use crate::permits::Permits;
use crate::secret::Secret;

/// The HTTP method of a call: transit, login and renewal write; lookups
/// and health read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Method {
    Get,
    Post,
}

/// One HTTP call to Vault.
pub(super) struct Call<'a> {
    /// Names the call in log lines, metrics and error messages.
    pub op: &'static str,
    pub method: Method,
    /// After `/v1/`.
    pub path: &'a str,
    /// JSON for a POST; `{}` when absent.
    pub body: Option<&'a str>,
    pub token: Option<&'a Secret>,
    /// A transit `batch_input` call: a 400 that carries `batch_results`
    /// is Vault's answer to a batch with refused items, not a failure.
    pub batch: bool,
}

/// One configured Vault address.
pub(super) struct Node {
    /// As configured, for messages and for matching redirect targets.
    pub addr: String,
    /// What request URLs start with (the host is the TLS server name when
    /// one is set).
    pub base: String,
    pub agent: ureq::Agent,
    /// At most [`VAULT_MAX_CONNECTIONS`](crate::limits::VAULT_MAX_CONNECTIONS)
    /// calls to this node at once.
    pub slots: Permits,
}

/// A 2xx answer to a call: the node that gave it (for messages about its
/// content) and its JSON body.
pub(super) struct Answer {
    pub addr: String,
    pub body: serde_json::Value,
}

/// Where a standby's 307 sends a call: the configured node's agent (so its
/// server name override still applies), its address for messages, and the
/// full URL.
struct RedirectTarget<'s> {
    agent: &'s ureq::Agent,
    slots: &'s Permits,
    addr: String,
    url: String,
}

/// A call that got no usable answer from one request: either a standby
/// pointed elsewhere, or the call failed for good at this node.
enum NotAnswered {
    Redirected { location: String },
    Failed(VaultError),
}

impl VaultClient {
    /// Sends one call, trying nodes in order of preference within the
    /// deadline. A node that is down, slow, sealed or failing (5xx, 429)
    /// hands over to the next. The node that answered last is tried first
    /// with all of the time left but [`VAULT_FAILOVER_RESERVE`] for each
    /// other node; after it, each untried node gets a fair share of what is
    /// left. When every node of a cluster failed, another pass starts
    /// after [`VAULT_ROUND_PAUSE`] while time is left, so a request that meets an
    /// election succeeds once a new active node serves. Any other answer,
    /// good or bad, is final.
    pub(super) fn call(&self, c: &Call<'_>, deadline: Instant) -> Result<Answer, VaultError> {
        let nodes = &self.inner.nodes;
        let n = nodes.len();
        let first = self.inner.preferred.load(Ordering::Relaxed) % n;
        let mut last = None;
        for pass in 0.. {
            for i in 0..n {
                let idx = (first + i) % n;
                let Some(node) = nodes.get(idx) else { break };
                let left = deadline.saturating_duration_since(Instant::now());
                if left < VAULT_MIN_ATTEMPT && last.is_some() {
                    break;
                }
                if crate::caller::gone() {
                    return Err(VaultError::Abandoned {
                        addr: node.addr.clone(),
                    });
                }
                match self.attempt(node, c, Instant::now() + attempt_budget(left, n, pass, i)) {
                    Ok(v) => {
                        if idx != first {
                            self.inner.preferred.store(idx, Ordering::Relaxed);
                            log::info!("vault: now preferring {} (the node that answers)", node.addr);
                        }
                        return Ok(Answer {
                            addr: node.addr.clone(),
                            body: v,
                        });
                    }
                    Err(_) if crate::caller::gone() => {
                        // Cut short by the caller leaving (bounded::Bounded),
                        // not the node's fault: no failover, no outage evidence.
                        return Err(VaultError::Abandoned {
                            addr: node.addr.clone(),
                        });
                    }
                    Err(e) if fails_over(&e) => {
                        log::debug!("vault: {} failed {} ({}): {e}", node.addr, c.op, e.class_name());
                        last = Some(e);
                    }
                    Err(e) => return Err(e),
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let again = if n == 1 {
                // A single node is retried once, at once, when a pooled
                // keep-alive connection turned out dead (it restarted).
                pass == 0 && matches!(last, Some(VaultError::Unreachable { .. })) && left >= VAULT_MIN_ATTEMPT
            } else {
                left >= VAULT_ROUND_PAUSE + VAULT_MIN_ATTEMPT
            };
            if !again {
                break;
            }
            if n > 1 {
                log::debug!(
                    "vault: no node could serve {}; next pass in {VAULT_ROUND_PAUSE:?}",
                    c.op
                );
                pause(VAULT_ROUND_PAUSE);
            }
        }
        Err(last.unwrap_or_else(|| VaultError::Timeout {
            addr: self.preferred_addr().to_owned(),
            after: Duration::ZERO,
        }))
    }

    /// One node: one request, and one hop more if a standby answers 307.
    pub(super) fn attempt(
        &self,
        node: &Node,
        c: &Call<'_>,
        deadline: Instant,
    ) -> Result<serde_json::Value, VaultError> {
        let url = format!("{}/v1/{}", node.base, c.path);
        let location = match self.send(&node.agent, &node.slots, &node.addr, &url, c, deadline) {
            Ok(v) => return Ok(v),
            Err(NotAnswered::Failed(e)) => return Err(e),
            Err(NotAnswered::Redirected { location }) => location,
        };
        let redirect_refused = |addr: String, message: &str| VaultError::Status {
            addr,
            op: c.op,
            path: c.path.to_owned(),
            status: 307,
            message: message.into(),
        };
        let to = self
            .redirect_target(&location)
            .map_err(|why| redirect_refused(node.addr.clone(), &why))?;
        log::debug!("vault: {} redirected {} to {}", node.addr, c.op, to.addr);
        match self.send(to.agent, to.slots, &to.addr, &to.url, c, deadline) {
            Ok(v) => Ok(v),
            Err(NotAnswered::Failed(e)) => Err(e),
            Err(NotAnswered::Redirected { .. }) => Err(redirect_refused(to.addr, "redirected twice")),
        }
    }

    /// Where a 307 points, if it is a configured node: the token and the
    /// DEK are only ever sent to an address the operator listed (scheme,
    /// host and port as configured), never to wherever an answer points.
    /// The error says why a location is refused, for the 307 message.
    fn redirect_target(&self, location: &str) -> Result<RedirectTarget<'_>, String> {
        let unusable = || "redirect to an unusable location".to_owned();
        let (scheme, rest) = location.split_once("://").ok_or_else(unusable)?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let base = parse_addr(&format!("{scheme}://{authority}")).map_err(|_| unusable())?;
        let path = path.strip_prefix("v1/").ok_or_else(unusable)?;
        let n = self.inner.nodes.iter().find(|n| n.addr == base).ok_or_else(|| {
            if looks_encoded(&base) {
                return "redirect to an address that is not a configured node (not quoted); not followed".to_owned();
            }
            let shown: String = base.chars().take(crate::limits::VAULT_MAX_ERROR_TEXT).collect();
            format!("redirect to {shown}, which is not a configured node; not followed")
        })?;
        Ok(RedirectTarget {
            agent: &n.agent,
            slots: &n.slots,
            addr: n.addr.clone(),
            url: format!("{}/v1/{path}", n.base),
        })
    }

    /// One HTTP request within what is left of the deadline, on one of the
    /// node's connection slots (waited for within the deadline); records
    /// its status and latency in the metrics.
    fn send(
        &self,
        agent: &ureq::Agent,
        slots: &Permits,
        addr: &str,
        url: &str,
        c: &Call<'_>,
        deadline: Instant,
    ) -> Result<serde_json::Value, NotAnswered> {
        let total = deadline.saturating_duration_since(Instant::now());
        let slot = slots.acquire_until(deadline, CALLER_POLL, crate::caller::gone);
        let budget = deadline.saturating_duration_since(Instant::now());
        let (Some(_slot), false) = (slot, budget.is_zero()) else {
            return Err(NotAnswered::Failed(VaultError::Timeout {
                addr: addr.to_owned(),
                after: total,
            }));
        };
        let ns = self.inner.namespace.as_deref();
        let started = Instant::now();
        let sent = match c.method {
            Method::Post => {
                let req = headers(agent.post(url), c.token, ns).header("Content-Type", "application/json");
                req.config()
                    .timeout_global(Some(budget))
                    .build()
                    .send(c.body.unwrap_or("{}").as_bytes())
            }
            Method::Get => headers(agent.get(url), c.token, ns)
                .config()
                .timeout_global(Some(budget))
                .build()
                .call(),
        };
        let record = |status| crate::metrics::metrics().vault_call(c.op, status, started.elapsed());
        let mut resp = sent.map_err(|e| {
            record(None);
            NotAnswered::Failed(transport_error(addr, c.path, e, budget))
        })?;
        let status = resp.status().as_u16();
        if status == 307 {
            if let Some(loc) = resp.headers().get("location").and_then(|l| l.to_str().ok()) {
                if loc.len() <= VAULT_MAX_LOCATION {
                    record(Some(status));
                    return Err(NotAnswered::Redirected {
                        location: loc.to_owned(),
                    });
                }
            }
        }
        let text = resp
            .body_mut()
            .with_config()
            .limit(MAX_VAULT_RESPONSE)
            .read_to_string()
            .map_err(|e| {
                record(None);
                NotAnswered::Failed(transport_error(addr, c.path, e, budget))
            })?;
        record(Some(status));
        if c.batch && status == 400 {
            if let Some(v) = serde_json::from_str(&text).ok().filter(has_batch_results) {
                return Ok(v);
            }
        }
        if !(200..300).contains(&status) {
            return Err(NotAnswered::Failed(VaultError::Status {
                addr: addr.to_owned(),
                op: c.op,
                path: c.path.to_owned(),
                status,
                // Nothing of what was sent (the body's plaintexts,
                // ciphertexts, secret_id or JWT, and the token) may come
                // back in a message (issue 21, 8). The raw body is looked
                // in, not a parsed copy of its secrets.
                message: error_text_for(&text, &[c.body.unwrap_or_default(), c.token.map_or("", Secret::expose)]),
            }));
        }
        serde_json::from_str(&text).map_err(|_| {
            NotAnswered::Failed(VaultError::Garbled {
                addr: addr.to_owned(),
                path: c.path.to_owned(),
            })
        })
    }
}

/// Whether an answer carries `data.batch_results`, as Vault's answer to a
/// batch with a refused item does (with HTTP 400).
fn has_batch_results(v: &serde_json::Value) -> bool {
    super::answer::section(v, "data").is_some_and(|d| d.get("batch_results").is_some_and(|b| b.is_array()))
}

/// Sleeps `d`, or less once the caller has gone (the next attempt's check
/// then ends the call).
fn pause(d: Duration) {
    let end = Instant::now() + d;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() || crate::caller::gone() {
            return;
        }
        std::thread::sleep(left.min(CALLER_POLL));
    }
}

/// The time attempt `i` (of `n` nodes) of pass `pass` gets out of `left`:
/// most of it for the preferred node on the first pass, a fair share of
/// what is left for each other node.
fn attempt_budget(left: Duration, n: usize, pass: usize, i: usize) -> Duration {
    let others = u32::try_from(n.saturating_sub(1)).unwrap_or(u32::MAX);
    if pass == 0 && i == 0 {
        let reserve = VAULT_FAILOVER_RESERVE.saturating_mul(others).min(left / 2);
        return left.saturating_sub(reserve);
    }
    left / u32::try_from(n.saturating_sub(i)).unwrap_or(1).max(1)
}

/// Token and namespace headers; `X-Vault-Request` as Vault's own CLI sends.
fn headers<B>(mut req: ureq::RequestBuilder<B>, token: Option<&Secret>, ns: Option<&str>) -> ureq::RequestBuilder<B> {
    if let Some(t) = token {
        req = req.header("X-Vault-Token", t.expose());
    }
    if let Some(ns) = ns {
        req = req.header("X-Vault-Namespace", ns);
    }
    req.header("X-Vault-Request", "true")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preferred_node_gets_most_of_the_budget() {
        let ms = Duration::from_millis;
        // Three nodes, 2 s: the preferred node gets 1.5 s, not 667 ms.
        assert_eq!(attempt_budget(ms(2000), 3, 0, 0), ms(1500));
        // Then the others share what is left.
        assert_eq!(attempt_budget(ms(500), 3, 0, 1), ms(250));
        assert_eq!(attempt_budget(ms(250), 3, 0, 2), ms(250));
        // One node: everything. A small budget: at most half is reserved.
        assert_eq!(attempt_budget(ms(2000), 1, 0, 0), ms(2000));
        assert_eq!(attempt_budget(ms(300), 3, 0, 0), ms(150));
        // Later passes (every node failed): fair shares.
        assert_eq!(attempt_budget(ms(900), 3, 1, 0), ms(300));
        // Sixteen nodes never underflow.
        assert_eq!(attempt_budget(ms(2000), 16, 0, 0), ms(1000));
    }

    #[test]
    fn redirects_go_only_to_a_configured_node() {
        let mut cfg = crate::config::tests::sample_config();
        cfg.vault.addrs = vec!["https://v1:8200".into(), "https://v2:8200".into()];
        cfg.vault.tls_server_name = Some("vault.internal".into());
        let c = VaultClient::new(&cfg.vault).unwrap();
        // A configured node keeps its own agent and server name.
        let to = c.redirect_target("https://v2:8200/v1/transit/encrypt/k").unwrap();
        assert_eq!(to.addr, "https://v2:8200");
        assert_eq!(to.url, "https://vault.internal:8200/v1/transit/encrypt/k");
        // Anywhere else is refused: another host, another port, another
        // scheme (never down to http), outside /v1/, junk.
        for bad in [
            "https://v9:8200/v1/transit/decrypt/k",
            "https://v2:8201/v1/transit/decrypt/k",
            "http://v2:8200/v1/transit/encrypt/k",
            "https://v2:8200/ui/",
            "https://user@v2:8200/v1/x",
            "/v1/relative",
            "",
        ] {
            assert!(c.redirect_target(bad).is_err(), "{bad}");
        }
        let why = c
            .redirect_target("https://evil.example:443/v1/transit/encrypt/k")
            .err()
            .unwrap();
        assert!(
            why.contains("https://evil.example:443") && why.contains("not a configured node"),
            "{why}"
        );
    }
}
