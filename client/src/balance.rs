//! Client-side balancing over several replicas of one server: round-robin,
//! a retry on another replica when a call gets no answer, and counts per
//! replica.
//!
//! gRPC runs every call of a client over one long-lived HTTP/2 connection,
//! so a connection-level (L4) load balancer such as a Kubernetes ClusterIP
//! Service pins each client to one replica for good. Spreading calls needs a
//! balancer that sees calls (L7: a mesh, an ingress) or a client that knows
//! every replica and picks one per call: this module, fed with several
//! addresses or with a name that resolves to several (a headless Service).
//!
//! A call is retried on the next replica when it got no answer from a server
//! (the connection failed or broke: a status tonic made itself, with a
//! transport error as its source) or the server said UNAVAILABLE (not ready,
//! draining). Both mean the request was not answered, and inference requests
//! are idempotent, so sending them again is safe. A replica that failed that
//! way is skipped for a short while ([`EJECT_FOR`]), then tried again.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// How long a replica that failed to answer is left out of the rotation
/// before it is tried again.
pub const EJECT_FOR: Duration = Duration::from_millis(500);

/// One replica: its address and the client(s) that reach it.
pub struct Replica<C> {
    /// The address as the user gave it, or as a name resolved to it.
    pub address: String,
    /// What calls are made with (a client, or one per connection).
    pub client: C,
    /// Until when it is left out after failing to answer.
    down_until: Mutex<Option<Instant>>,
}

/// The replicas of one server, balanced round-robin.
pub struct Replicas<C> {
    members: Vec<Replica<C>>,
}

/// The result of a balanced call: which replica answered, and on which
/// replicas the request failed first and was sent again.
#[derive(Debug)]
pub struct Routed<T> {
    /// The answer, or the last failure.
    pub result: Result<T, tonic::Status>,
    /// Index of the replica that gave `result`.
    pub replica: usize,
    /// Replicas that did not answer before it, in order.
    pub retried_from: Vec<usize>,
}

/// Whether a failed call got no answer from a server: a broken or refused
/// connection (a status tonic made from a transport error, which carries
/// that error as its source), or the server saying UNAVAILABLE.
pub fn unanswered(s: &tonic::Status) -> bool {
    s.code() == tonic::Code::Unavailable || std::error::Error::source(s).is_some()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<C> Replicas<C> {
    /// The replicas `(address, client)`; at least one.
    pub fn new(members: Vec<(String, C)>) -> Self {
        assert!(
            !members.is_empty(),
            "Replicas::new needs at least one replica"
        );
        Replicas {
            members: members
                .into_iter()
                .map(|(address, client)| Replica {
                    address,
                    client,
                    down_until: Mutex::new(None),
                })
                .collect(),
        }
    }

    /// The same replicas with each client turned into another (e.g.
    /// channels into typed clients).
    pub fn map<D>(self, f: impl Fn(C) -> D) -> Replicas<D> {
        Replicas {
            members: self
                .members
                .into_iter()
                .map(|m| Replica {
                    address: m.address,
                    client: f(m.client),
                    down_until: m.down_until,
                })
                .collect(),
        }
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Never true: there is always one.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The replicas in order.
    pub fn members(&self) -> &[Replica<C>] {
        &self.members
    }

    /// Their addresses in order.
    pub fn addresses(&self) -> Vec<String> {
        self.members.iter().map(|m| m.address.clone()).collect()
    }

    /// The replica for call `i`: the `i`-th in rotation, or the next one
    /// after it that is not left out (when all are, the `i`-th).
    fn pick(&self, i: u64, skip: &[usize]) -> usize {
        let n = self.members.len();
        let now = Instant::now();
        let first = (i % n as u64) as usize;
        let usable = |k: usize| {
            !skip.contains(&k) && lock(&self.members[k].down_until).is_none_or(|t| now >= t)
        };
        (0..n)
            .map(|d| (first + d) % n)
            .find(|&k| usable(k))
            .or_else(|| (0..n).map(|d| (first + d) % n).find(|k| !skip.contains(k)))
            .unwrap_or(first)
    }

    /// Sends call `i` with `f` to a replica in rotation; when it gets no
    /// answer ([`unanswered`]), sends it to the next replica, each replica
    /// at most once.
    pub async fn call<'a, T, F, Fut>(&'a self, i: u64, f: F) -> Routed<T>
    where
        F: Fn(&'a C) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let mut retried_from = Vec::new();
        loop {
            let k = self.pick(i, &retried_from);
            let member = &self.members[k];
            let result = f(&member.client).await;
            match &result {
                Err(s) if unanswered(s) => {
                    *lock(&member.down_until) = Some(Instant::now() + EJECT_FOR);
                    if retried_from.len() + 1 < self.members.len() {
                        retried_from.push(k);
                        continue;
                    }
                }
                Ok(_) => *lock(&member.down_until) = None,
                Err(_) => {}
            }
            return Routed {
                result,
                replica: k,
                retried_from,
            };
        }
    }
}

/// What one replica did, as counted by a [`Tally`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ReplicaCount {
    /// The replica's address.
    pub address: String,
    /// Requests it answered successfully.
    pub ok: u64,
    /// Requests whose final failure came from it.
    pub failed: u64,
    /// Requests it did not answer that were then sent to another replica.
    pub retried_elsewhere: u64,
}

/// Counts per replica of balanced calls, by replica index.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    counts: BTreeMap<usize, (u64, u64, u64)>,
}

impl Tally {
    /// Counts one routed call.
    pub fn record<T>(&mut self, r: &Routed<T>) {
        let e = self.counts.entry(r.replica).or_default();
        match r.result {
            Ok(_) => e.0 += 1,
            Err(_) => e.1 += 1,
        }
        for k in &r.retried_from {
            self.counts.entry(*k).or_default().2 += 1;
        }
    }

    /// Adds another tally to this one.
    pub fn merge(&mut self, other: &Tally) {
        for (k, (ok, failed, retried)) in &other.counts {
            let e = self.counts.entry(*k).or_default();
            e.0 += ok;
            e.1 += failed;
            e.2 += retried;
        }
    }

    /// Requests that were sent again after a replica did not answer.
    pub fn retries(&self) -> u64 {
        self.counts.values().map(|c| c.2).sum()
    }

    /// One count per address, in order (replicas that saw nothing count 0).
    pub fn by_replica(&self, addresses: &[String]) -> Vec<ReplicaCount> {
        addresses
            .iter()
            .enumerate()
            .map(|(k, address)| {
                let (ok, failed, retried_elsewhere) =
                    self.counts.get(&k).copied().unwrap_or_default();
                ReplicaCount {
                    address: address.clone(),
                    ok,
                    failed,
                    retried_elsewhere,
                }
            })
            .collect()
    }
}

/// A table of per-replica counts, or nothing for a single replica.
pub fn replica_table(counts: &[ReplicaCount]) -> String {
    use std::fmt::Write as _;
    if counts.len() < 2 {
        return String::new();
    }
    let width = counts
        .iter()
        .map(|c| c.address.len())
        .max()
        .unwrap_or(7)
        .max(7);
    let mut s = format!(
        "{:<width$}  {:>10}  {:>8}  {:>17}\n",
        "replica", "ok", "failed", "retried elsewhere"
    );
    for c in counts {
        let _ = writeln!(
            s,
            "{:<width$}  {:>10}  {:>8}  {:>17}",
            c.address, c.ok, c.failed, c.retried_elsewhere
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn three() -> Replicas<usize> {
        Replicas::new((0..3).map(|k| (format!("r{k}"), k)).collect())
    }

    #[tokio::test]
    async fn round_robin_spreads_calls_evenly() {
        let r = three();
        let mut tally = Tally::default();
        for i in 0..9 {
            let routed = r
                .call(i, |&k| async move { Ok::<_, tonic::Status>(k) })
                .await;
            assert_eq!(routed.result.as_ref().ok(), Some(&routed.replica));
            tally.record(&routed);
        }
        let counts = tally.by_replica(&r.addresses());
        assert!(
            counts.iter().all(|c| c.ok == 3 && c.failed == 0),
            "{counts:?}"
        );
        assert_eq!(tally.retries(), 0);
    }

    #[tokio::test]
    async fn an_unanswering_replica_is_retried_elsewhere_and_then_skipped() {
        let r = three();
        let mut tally = Tally::default();
        for i in 0..30 {
            let routed = r
                .call(i, |&k| async move {
                    if k == 1 {
                        Err(tonic::Status::unavailable("down"))
                    } else {
                        Ok(k)
                    }
                })
                .await;
            assert!(routed.result.is_ok(), "call {i}: {routed:?}");
            tally.record(&routed);
        }
        let counts = tally.by_replica(&r.addresses());
        assert_eq!(counts[1].ok, 0);
        // The first failure leaves replica 1 out: it is not tried again
        // within EJECT_FOR, so exactly one request was retried.
        assert_eq!(counts[1].retried_elsewhere, 1, "{counts:?}");
        assert_eq!(counts[0].ok + counts[2].ok, 30);
    }

    #[tokio::test]
    async fn an_answered_error_is_not_retried() {
        let r = three();
        let routed = r
            .call(0, |_| async {
                Err::<(), _>(tonic::Status::invalid_argument("bad"))
            })
            .await;
        assert_eq!(routed.replica, 0);
        assert!(routed.retried_from.is_empty());
        assert_eq!(
            routed.result.err().map(|s| s.code()),
            Some(tonic::Code::InvalidArgument)
        );
    }

    #[tokio::test]
    async fn when_every_replica_fails_the_last_failure_is_returned_after_one_try_each() {
        let r = three();
        let routed = r
            .call(2, |_| async {
                Err::<(), _>(tonic::Status::unavailable("down"))
            })
            .await;
        assert_eq!(routed.retried_from.len(), 2);
        assert!(routed.result.is_err());
    }

    #[tokio::test]
    async fn an_ejected_replica_comes_back_after_the_ejection() {
        let r = three();
        let broken = AtomicBool::new(true);
        let call = |i| {
            r.call(i, |&k| {
                let fail = k == 0 && broken.load(Ordering::SeqCst);
                async move {
                    if fail {
                        Err(tonic::Status::unavailable("down"))
                    } else {
                        Ok(k)
                    }
                }
            })
        };
        assert_eq!(call(0).await.replica, 1);
        broken.store(false, Ordering::SeqCst);
        assert_eq!(call(3).await.replica, 1, "still left out");
        tokio::time::sleep(EJECT_FOR + Duration::from_millis(50)).await;
        assert_eq!(call(3).await.replica, 0, "back in rotation");
    }
}
