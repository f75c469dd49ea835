//! Which incarnation of the transit key a version belongs to: the creation
//! time Vault records for each version (`keys` in a read of
//! `<mount>/keys/<key>`, metadata only), carried in every key id
//! (`…:v3@1796235632`). A key deleted and created again under the same
//! name starts again at v1 with new times, so its key ids differ from the
//! dead key's and the apiserver makes a new seed instead of going on with
//! one only the dead key could decrypt.
//!
//! The times are read by each health check (so Status notices a re-created
//! key within one check) and by an Encrypt that meets a version not seen
//! yet (a rotation). If the token may not read the key (a policy from an
//! earlier release), key ids carry no time, as before, and one warning
//! says what to grant.

use std::collections::BTreeMap;
use std::time::Instant;

use super::health::{lock, Current};
use super::Kms;
use crate::vault::{VaultError, VaultErrorClass};

/// What is known of the key's versions.
#[derive(Default)]
pub(super) struct Times {
    /// Version → creation time (Unix seconds), from the last read.
    known: BTreeMap<u64, u64>,
    /// The last read was refused (403): not retried on the request path.
    denied: bool,
}

impl Kms {
    /// The creation time of `version` of the primary key, read from Vault
    /// when this version has not been seen yet, or when it is older than
    /// the newest one known (transit encrypts with the latest version, so
    /// an older one means the key was deleted and created again, or
    /// restored from a backup, and the times known are the dead key's);
    /// `None` if it cannot be read.
    pub(super) fn created(&self, version: u64, deadline: Instant) -> Option<u64> {
        let stale = {
            let t = lock(&self.times);
            let newest = t.known.keys().next_back().copied().unwrap_or(0);
            !t.denied && (!t.known.contains_key(&version) || version < newest)
        };
        if stale {
            // A key id without a time is still a valid answer; the health
            // check reports a read Vault does not answer.
            let _ = self.read_times(deadline);
        }
        self.known_created(version)
    }

    /// Whether `c` is still a version of the key as Vault described it in
    /// the last read: same number, same creation time. With no read (the
    /// policy has no read on the key) nothing can be told, so it is taken
    /// to exist, as before key ids carried times.
    pub(super) fn still_exists(&self, c: Current) -> bool {
        let t = lock(&self.times);
        if t.known.is_empty() {
            return true;
        }
        match (t.known.get(&c.version), c.created) {
            (Some(at), Some(c_at)) => *at == c_at,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    /// The creation time of `version` if already known (no Vault call).
    pub(super) fn known_created(&self, version: u64) -> Option<u64> {
        lock(&self.times).known.get(&version).copied()
    }

    /// Reads the key's version times. The token is used as it is, without
    /// the refresh-and-retry of transit calls: a refusal here is the
    /// policy's (a bad token fails the transit call first).
    /// A refusal is remembered and is no error (key ids then carry no
    /// time); any other failure is returned, for the health check.
    pub(super) fn read_times(&self, deadline: Instant) -> Result<(), VaultError> {
        let ticket = self.session.ticket();
        let read = self.vault.read_key(&ticket.token, &self.key, deadline);
        let mut t = lock(&self.times);
        match read {
            Ok(info) => {
                let recreated = info
                    .created
                    .iter()
                    .any(|(v, c)| t.known.get(v).is_some_and(|old| old != c));
                if recreated {
                    log::warn!(
                        "transit key {} was deleted and created again: its key ids change, so the apiserver makes a new seed",
                        self.key
                    );
                }
                t.known = info.created;
                t.denied = false;
                Ok(())
            }
            Err(e) if e.class() == VaultErrorClass::Denied => {
                if !t.denied {
                    log::warn!(
                        "cannot read transit key {} ({}): key ids carry no creation time, so a key deleted and created again under this name would repeat them; grant \"read\" on {}/keys/{} (deploy/vault/policy.hcl)",
                        self.key,
                        e.class_name(),
                        self.key.mount,
                        self.key.key
                    );
                }
                t.denied = true;
                Ok(())
            }
            Err(e) => {
                log::debug!("cannot read transit key {} times now: {e}", self.key);
                Err(e)
            }
        }
    }
}
