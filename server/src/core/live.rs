//! What the live view reads from the core: every served version's
//! statistics and the front ends' refusals, sampled; and the report the
//! page polls.

use std::sync::Arc;

use super::Core;
use crate::live::{Counters, LiveReport, LiveView, ModelRow, Sample, Source, refusals};

impl Source for Core {
    fn live(&self) -> &LiveView {
        &self.live
    }

    fn sample(&self) -> Sample {
        let models = self.models();
        let m = self.control.metrics();
        Sample {
            at_s: self.live.uptime_s(),
            models: models
                .versions()
                .map(|(name, v)| {
                    let key = (name.clone(), v.version, Arc::as_ptr(&v.stats) as usize);
                    (key, Counters::of(&v.stats.snapshot()))
                })
                .collect(),
            refused: refusals(&[
                ("shed", &m.shed),
                ("stalled", &m.stalled),
                ("refused", &m.connections_refused),
                ("cut", &m.connections_cut),
            ]),
        }
    }
}

impl Core {
    /// The live view's report: each model version's state and totals, and
    /// the windows that ended after `since` (seconds since the server
    /// started; negative: all kept). The first call starts the sampler,
    /// so its first window comes a second later.
    pub fn live_report(self: &Arc<Self>, since: f64) -> LiveReport {
        let windows = LiveView::windows_since(self, since);
        let models = self.models();
        let rows = models
            .versions()
            .map(|(name, v)| {
                let s = v.stats.snapshot();
                ModelRow {
                    name: name.clone(),
                    version: v.version,
                    state: v.model_state().as_str(),
                    reason: v.reason(),
                    ok: s.requests.success.count,
                    failed: s.requests.fail.count,
                    images: s.inference_count,
                }
            })
            .collect();
        LiveReport {
            uptime_s: self.live.uptime_s(),
            every_s: crate::live::EVERY.as_secs_f64(),
            models: rows,
            windows,
        }
    }
}
