//! Check 4, cold start: with 2,000 Secrets stored, a restarted
//! kube-apiserver reads them all back; the figures are the time to its
//! first complete list and the Decrypt calls the plugin served for it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::at_rest::{stored_versions, Kms};
use crate::kube::APISERVER_START;
use crate::stack::{figure, poll, Stack};

/// The issue asks for at least 2,000 Secrets.
const SECRETS: usize = 2000;
/// Parallel writers filling etcd (the apiserver takes them in parallel; the
/// 2 cores are the limit, not this).
const WRITERS: usize = 4;
/// From the restart to a complete list: the apiserver's own start (about
/// 10 s here) plus one Decrypt per Secret for v1 at a few ms each.
const FIRST_LIST: Duration = Duration::from_secs(180);

pub fn cold_start(kms: Kms) {
    let mut s = Stack::start(&format!("cold-start-{kms:?}"), kms.opts());
    let values = crate::secret_values(SECRETS);
    let fill = Instant::now();
    std::thread::scope(|scope| {
        for w in 0..WRITERS {
            let api = &s.apiserver.api;
            let values = &values;
            scope.spawn(move || {
                for (i, v) in values.iter().enumerate().skip(w).step_by(WRITERS) {
                    api.create_secret_ok("default", &format!("cold-{i}"), &[("v", v)]);
                }
            });
        }
    });
    let fill = fill.elapsed();
    assert_eq!(stored_versions(&s.etcd, kms).len(), SECRETS);

    let series = format!(
        "trousseau_kms_requests_total{{api=\"{}\",operation=\"decrypt\",outcome=\"ok\"}}",
        kms.metric_api()
    );
    let decrypts_before = s.plugin_metric(&series);
    s.apiserver.restart_no_wait();
    let start = Instant::now();
    let (items, first_list) = poll(
        "a complete list after the restart",
        FIRST_LIST,
        Duration::from_millis(200),
        || {
            let (st, v) = s.apiserver.api.get("/api/v1/namespaces/default/secrets");
            let items = v["items"].as_array()?;
            (st == 200 && items.len() == SECRETS).then(|| items.clone())
        },
    );
    s.apiserver.wait_ready(APISERVER_START);
    let ready = start.elapsed();
    let decrypts = s.plugin_metric(&series) - decrypts_before;

    let b64 = base64::engine::general_purpose::STANDARD;
    let by_name: HashMap<String, Vec<u8>> = items
        .iter()
        .map(|it| {
            let name = it["metadata"]["name"].as_str().unwrap().to_owned();
            let v = b64.decode(it["data"]["v"].as_str().unwrap()).unwrap();
            (name, v)
        })
        .collect();
    for (i, v) in values.iter().enumerate() {
        assert_eq!(by_name.get(&format!("cold-{i}")), Some(v), "cold-{i} after the restart");
    }
    figure(&format!(
        "cold start ({kms:?}): {SECRETS} Secrets (written in {:.1} s); restart to first complete list {:.1} s \
         (/readyz ok by {:.1} s); plugin Decrypts for it: {decrypts}",
        fill.as_secs_f64(),
        first_list.as_secs_f64(),
        ready.as_secs_f64(),
    ));
    match kms {
        // All 2,000 share one DEK seed, so a handful of Decrypts, not one
        // per Secret (10 measured here: the apiserver's seed cache lets
        // concurrent misses each ask the plugin).
        Kms::V2 => assert!(
            (1.0..=(SECRETS / 100) as f64).contains(&decrypts),
            "v2 cold start made {decrypts} Decrypts"
        ),
        // A DEK per Secret: at least one Decrypt each on a cache miss.
        Kms::V1 => assert!(decrypts >= SECRETS as f64, "v1 cold start made {decrypts} Decrypts"),
    }
}

#[test]
fn check4_cold_start_v2() {
    cold_start(Kms::V2);
}
