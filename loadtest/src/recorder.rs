//! Latencies and errors of one measurement window. Only successful requests
//! go into the latency histogram (as perf_analyzer and ghz do); failures are
//! counted by gRPC status with the first message of each. Bad requests
//! mixed in on purpose are counted apart, by class, against the status each
//! is owed: they are neither latencies nor failures of the server.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2DeflateSerializer};

use crate::hostile::HostileCount;
use crate::workload::Sent;
use rir_client::balance::Tally;
use rir_client::error::code_name;

/// Highest latency the histogram holds, microseconds (one hour); longer
/// ones are clamped to it.
const MAX_MICROS: u64 = 3_600_000_000;

/// A latency histogram as text: HdrHistogram's V2 encoding, compressed,
/// in base64 (the form of HdrHistogram's log files, so other HDR tools read
/// it too).
pub fn histogram_text(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    match V2DeflateSerializer::new().serialize(h, &mut bytes) {
        Ok(_) => STANDARD.encode(bytes),
        // Writing to memory cannot fail; an empty text reads back as "no histogram".
        Err(_) => String::new(),
    }
}

/// Why a report's histogram cannot be read back.
#[derive(Debug, thiserror::Error)]
pub enum HistogramTextError {
    /// The report carries none (written by an older rir-loadtest).
    #[error("no histogram: write it with this rir-loadtest's --json")]
    Missing,
    /// Not base64.
    #[error("not base64: {0}")]
    Base64(#[from] base64::DecodeError),
    /// Not HdrHistogram's V2 encoding.
    #[error("not an HDR histogram: {0:?}")]
    Hdr(hdrhistogram::serialization::DeserializeError),
    /// Not as many latencies as the report's successes.
    #[error("it holds {held} latencies for {ok} successes")]
    Count { held: u64, ok: u64 },
    /// Values the recorder's bounds cannot hold.
    #[error("outside the recorder's bounds: {0:?}")]
    Bounds(hdrhistogram::AdditionError),
}

/// Reads a histogram written by [`histogram_text`], with the recorder's
/// bounds so that it adds to any other.
pub fn histogram_from_text(text: &str) -> Result<Histogram<u64>, HistogramTextError> {
    if text.trim().is_empty() {
        return Err(HistogramTextError::Missing);
    }
    let bytes = STANDARD.decode(text.trim())?;
    let read: Histogram<u64> = Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(HistogramTextError::Hdr)?;
    let mut h = Recorder::new().latency;
    h.add(&read).map_err(HistogramTextError::Bounds)?;
    Ok(h)
}

/// One window's record.
#[derive(Clone)]
pub struct Recorder {
    /// Latency of each successful request, microseconds, 3 significant digits.
    pub latency: Histogram<u64>,
    /// Failed requests by status code name.
    pub errors: BTreeMap<String, u64>,
    /// The first message seen for each failing status.
    pub messages: BTreeMap<String, String>,
    /// What each replica answered, and the requests sent again after one
    /// did not answer.
    pub replicas: Tally,
    /// The bad requests by class name.
    pub hostile: BTreeMap<String, HostileCount>,
    /// Open loop: sends that left more than 1 ms after their intended time.
    pub late: u64,
    /// Open loop: sends due before the run stopped that never went (the
    /// generator or the in-flight limit could not keep up).
    pub not_sent: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    /// An empty record.
    pub fn new() -> Self {
        Recorder {
            latency: Histogram::new_with_bounds(1, MAX_MICROS, 3)
                .expect("static histogram bounds are valid"),
            errors: BTreeMap::new(),
            messages: BTreeMap::new(),
            replicas: Tally::default(),
            hostile: BTreeMap::new(),
            late: 0,
            not_sent: 0,
        }
    }

    /// Records one request's outcome, and where it was answered.
    pub fn record(&mut self, latency: Duration, sent: &Sent) {
        let routed = &sent.routed;
        if let Some(h) = sent.hostile {
            let c = self
                .hostile
                .entry(h.name().to_string())
                .or_insert_with(|| HostileCount::owed(h.expected()));
            c.sent += 1;
            let got = match &routed.result {
                Ok(()) => "OK",
                Err(s) => code_name(s.code()),
            };
            if got == c.expected {
                c.as_expected += 1;
            } else {
                *c.otherwise.entry(got.to_string()).or_default() += 1;
                if c.message.is_none() {
                    c.message = Some(match &routed.result {
                        Ok(()) => "it succeeded".into(),
                        Err(s) => s.message().to_string(),
                    });
                }
            }
            return;
        }
        self.replicas.record(routed);
        match &routed.result {
            Ok(()) => {
                let us = (latency.as_micros() as u64).clamp(1, MAX_MICROS);
                self.latency.saturating_record(us);
            }
            Err(s) => {
                let code = code_name(s.code()).to_string();
                *self.errors.entry(code.clone()).or_default() += 1;
                self.messages
                    .entry(code)
                    .or_insert_with(|| s.message().to_string());
            }
        }
    }

    /// Successful requests.
    pub fn ok(&self) -> u64 {
        self.latency.len()
    }

    /// Failed requests.
    pub fn failed(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Adds another window's record to this one.
    pub fn merge(&mut self, other: &Recorder) {
        self.latency
            .add(&other.latency)
            .expect("histograms share their bounds");
        for (k, v) in &other.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        for (k, m) in &other.messages {
            self.messages.entry(k.clone()).or_insert_with(|| m.clone());
        }
        self.replicas.merge(&other.replicas);
        for (k, c) in &other.hostile {
            self.hostile.entry(k.clone()).or_default().merge(c);
        }
        self.late += other.late;
        self.not_sent += other.not_sent;
    }
}
