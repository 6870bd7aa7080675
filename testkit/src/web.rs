//! One HTTP exchange with a client that hands back 4xx and 5xx answers as
//! they are, for the REST front end and the metrics endpoint.

use std::collections::HashMap;

/// One HTTP answer: status, headers (lower-case names) and body.
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers, lower-case names.
    pub headers: HashMap<String, String>,
    /// Body.
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The `error` of a JSON error body.
    pub fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .expect("an error message")
            .to_string()
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request and returns the answer, whatever its status.
pub async fn call(method: &str, url: String, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
    let method = method.to_string();
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut request = http::Request::builder().method(method.as_str()).uri(&url);
        for (k, v) in &headers {
            request = request.header(k, v);
        }
        let mut response = agent
            .run(request.body(body).expect("a well-formed request"))
            .expect(&url);
        Reply {
            status: response.status().as_u16(),
            headers: response
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
                .collect(),
            body: response
                .body_mut()
                .with_config()
                .limit(64 << 20)
                .read_to_vec()
                .expect("reading the body"),
        }
    })
    .await
    .expect("the HTTP exchange")
}

/// A GET.
pub async fn get(url: String) -> Reply {
    call("GET", url, &[], vec![]).await
}

/// The value of one sample in Prometheus text: the line that starts with
/// `series` (name and labels as rendered, e.g. `rir_execution_count{model="m"}`).
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Serves `body` to every GET on a loopback port, from a thread of its
/// own, for as long as the test runs: a stand-in for a download site (the
/// client under test is the real one). Returns `http://127.0.0.1:PORT`.
pub fn serve_file(body: Vec<u8>) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let url = format!("http://{}", listener.local_addr().expect("its address"));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(&stream);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let mut out = &stream;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = out.write_all(head.as_bytes());
            let _ = out.write_all(&body);
        }
    });
    url
}

/// The DOM of `url` as Debian's headless Chromium (`$RIR_CHROMIUM`, else
/// `chromium`) leaves it after `virtual_ms` of the page's virtual time:
/// timers run as fast as the page's network calls allow, so a page that
/// polls every second polls `virtual_ms / 1000` times.
pub fn headless_dom(url: &str, virtual_ms: u32) -> String {
    dump_dom(url, virtual_ms, &[])
}

/// The same with no network: every host name fails to resolve and every
/// request goes to a proxy that is not there (a `file://` page that opens
/// this way needs nothing from outside).
pub fn headless_dom_offline(url: &str, virtual_ms: u32) -> String {
    let cut = [
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--proxy-server=http://127.0.0.1:9",
    ];
    dump_dom(url, virtual_ms, &cut)
}

fn dump_dom(url: &str, virtual_ms: u32, extra: &[&str]) -> String {
    let chromium = std::env::var("RIR_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let out = std::process::Command::new(&chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"])
        .arg(format!("--virtual-time-budget={virtual_ms}"))
        .args(extra)
        .arg(url)
        .output()
        .unwrap_or_else(|e| panic!("{chromium}: {e} (scripts/test.sh installs Debian's chromium)"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of attribute `name` on the first element that has it in
/// `dom` (as Chromium serializes it: `name="value"`).
pub fn attribute<'a>(dom: &'a str, name: &str) -> Option<&'a str> {
    let (_, rest) = dom.split_once(&format!(" {name}=\""))?;
    Some(rest.split_once('"')?.0)
}

/// The `(x, y)` of every point of series `series` in an HTML page or SVG
/// whose points are written as `class="point" data-series="NAME"
/// data-x="X" data-y="Y"` (rir-loadtest's reports), in document order.
pub fn svg_points(html: &str, series: &str) -> Vec<(f64, f64)> {
    let tag = format!("class=\"point\" data-series=\"{series}\" data-x=\"");
    html.split(&tag)
        .skip(1)
        .filter_map(|rest| {
            let (x, rest) = rest.split_once('"')?;
            let y = rest.split_once("data-y=\"")?.1.split_once('"')?.0;
            Some((x.parse().ok()?, y.parse().ok()?))
        })
        .collect()
}
