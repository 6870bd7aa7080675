//! The load generator's ceiling: closed loop at each concurrency against
//! the stub answering at once, in this process. What rir-loadtest can
//! measure at all on this machine.

use rir_loadtest::report::table;

use crate::BenchError;
use crate::point::{BenchOptions, closed, cores, workload};
use rir_testkit::doubles::stub::{Script, StubServer};

/// The table of the ceiling at `o`'s concurrencies.
pub async fn ceiling(o: &BenchOptions) -> Result<String, BenchError> {
    let stub = StubServer::start(Script::instant("trivial"))
        .await
        .map_err(|e| BenchError::io("starting the stub server", e))?;
    let w = std::sync::Arc::new(workload(&stub.url, "trivial").await?);
    let mut reports = Vec::new();
    for &c in &o.concurrency {
        reports.push(closed(&w, c, o).await?);
    }
    stub.shutdown().await;
    let mut out = format!(
        "rir-loadtest ceiling: ModelInfer batch 1 (16 bytes) against a server that does no work, \
         both in this process on {} cores\n\n",
        cores()
    );
    out.push_str(&table(&reports));
    Ok(out)
}
