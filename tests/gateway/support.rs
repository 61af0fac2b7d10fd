//! Test support: the real `llm` binary and the `llm-mock` upstream as child processes on free ports, an
//! HTTP client, and a parser for `/metrics` (the exposition is parsed, never grepped).

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub use serde_json::{json, Value};

static NEXT: AtomicUsize = AtomicUsize::new(0);

pub fn scratch_dir() -> PathBuf {
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("llm-test-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir is writable");
    dir
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The mock upstream, killed on drop.
pub struct Mock {
    child: Child,
    pub port: u16,
}

impl Mock {
    pub fn start() -> Mock {
        let mut child = Command::new(env!("CARGO_BIN_EXE_llm-mock"))
            .args(["--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("llm-mock starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("llm-mock prints its port");
        let port = line
            .trim()
            .strip_prefix("LISTENING ")
            .and_then(|p| p.parse().ok())
            .expect("LISTENING <port>");
        Mock { child, port }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// Sets the answering rule for one upstream model.
    pub async fn rule(&self, rule: Value) {
        let resp = client()
            .post(format!("http://127.0.0.1:{}/__mock/rules", self.port))
            .send_json(&rule)
            .await
            .expect("mock answers");
        assert!(resp.status().is_success());
    }

    pub async fn calls(&self) -> HashMap<String, u64> {
        let mut resp = client()
            .get(format!("http://127.0.0.1:{}/__mock/calls", self.port))
            .send()
            .await
            .unwrap();
        resp.json().await.unwrap()
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The gateway, started on a config written to a scratch dir, killed on drop. Its SQLite file lives in that
/// dir; with `LLM_TEST_DATABASE_URL` set (a PostgreSQL URL), each gateway gets a fresh database there.
pub struct Gateway {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
    database_url: Option<String>,
    keep_dir: bool,
}

/// A new, empty PostgreSQL database next to the one `base` names; returns its URL.
async fn fresh_database(base: &str) -> String {
    use sqlx::Executor;
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let name = format!("llm_test_{}_{n}", std::process::id());
    let pool = sqlx::PgPool::connect(base)
        .await
        .expect("LLM_TEST_DATABASE_URL connects");
    pool.execute(format!("DROP DATABASE IF EXISTS {name}").as_str())
        .await
        .unwrap();
    pool.execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("CREATE DATABASE");
    pool.close().await;
    let (prefix, _) = base.rsplit_once('/').expect("URL has a database name");
    format!("{prefix}/{name}")
}

impl Gateway {
    pub async fn start(config: &str) -> Gateway {
        let dir = scratch_dir();
        let database_url = match std::env::var("LLM_TEST_DATABASE_URL") {
            Ok(base) if !base.is_empty() => Some(fresh_database(&base).await),
            _ => None,
        };
        Self::start_in(dir, config, database_url).await
    }

    /// Starts on an existing dir (and database): a restart.
    pub async fn start_in(dir: PathBuf, config: &str, database_url: Option<String>) -> Gateway {
        let path = dir.join("config.yaml");
        std::fs::write(&path, config).unwrap();
        let port = free_port();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("gateway.log"))
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_llm"));
        cmd.args([
            "--config",
            path.to_str().unwrap(),
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ])
        .args(["--num_workers", "1"])
        .env_remove("DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(log);
        if let Some(url) = &database_url {
            cmd.env("DATABASE_URL", url);
        }
        let child = cmd.spawn().expect("llm starts");
        let gw = Gateway {
            child,
            port,
            dir,
            database_url,
            keep_dir: false,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(r) = client().get(gw.url("/health/liveliness")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "gateway did not start: {}",
                gw.log()
            );
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
        gw
    }

    /// A second replica: another gateway process on the same database (PostgreSQL only; `None` on SQLite,
    /// whose file one process owns).
    pub async fn replica(&self, config: &str) -> Option<Gateway> {
        let url = self.database_url.clone()?;
        Some(Gateway::start_in(scratch_dir(), config, Some(url)).await)
    }

    /// Stops the gateway as an operator would (SIGTERM, graceful) and starts it again on the same files.
    pub async fn restart(self, config: &str) -> Gateway {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        self.restart_after_exit(config).await
    }

    /// Waits for the gateway to exit on its own (a signal the test sent it), checks it exited cleanly, and
    /// starts it again on the same files.
    pub async fn restart_after_exit(mut self, config: &str) -> Gateway {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(code) = self.child.try_wait().unwrap() {
                assert!(code.success(), "gateway exited with {code}: {}", self.log());
                break;
            }
            assert!(Instant::now() < deadline, "gateway did not stop");
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
        self.keep_dir = true;
        let (dir, url) = (self.dir.clone(), self.database_url.clone());
        drop(self);
        Gateway::start_in(dir, config, url).await
    }

    /// A management call with the master key `sk-master`.
    pub async fn admin(&self, path: &str, body: &Value) -> Reply {
        self.post_with(path, body, &[("authorization", "Bearer sk-master")])
            .await
    }

    pub async fn admin_get(&self, path: &str) -> Reply {
        self.get(path, &[("authorization", "Bearer sk-master")])
            .await
    }

    /// The database the gateway uses, when it is PostgreSQL.
    pub fn database_url(&self) -> Option<&str> {
        self.database_url.as_deref()
    }

    /// The gateway's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("gateway.log")).unwrap_or_default()
    }

    /// POSTs JSON; returns status, headers and body text.
    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.post_raw(path, body.to_string().into_bytes(), &[])
            .await
    }

    pub async fn post_with(&self, path: &str, body: &Value, headers: &[(&str, &str)]) -> Reply {
        self.post_raw(path, body.to_string().into_bytes(), headers)
            .await
    }

    pub async fn post_raw(&self, path: &str, body: Vec<u8>, headers: &[(&str, &str)]) -> Reply {
        let mut req = client()
            .post(self.url(path))
            .insert_header(("content-type", "application/json"));
        for (k, v) in headers {
            req = req.insert_header((*k, *v));
        }
        Reply::read(req.send_body(body).await.expect("gateway answers")).await
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = client().get(self.url(path));
        for (k, v) in headers {
            req = req.insert_header((*k, *v));
        }
        Reply::read(req.send().await.expect("gateway answers")).await
    }

    /// Scrapes `/metrics` once the metrics actor has caught up with `expect_requests` finished requests
    /// (events are sent after the response, so a scrape right after a reply could miss the last one).
    pub async fn metrics_after(&self, expect_requests: f64) -> Metrics {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let m = self.metrics().await;
            if m.sum("llm_proxy_total_requests_metric_total", &[]) >= expect_requests
                || Instant::now() > deadline
            {
                return m;
            }
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn metrics(&self) -> Metrics {
        let r = self.get("/metrics", &[]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        Metrics::parse(&r.body)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.keep_dir && std::env::var_os("LLM_TEST_KEEP_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub struct Reply {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Reply {
    async fn read(mut resp: awc::ClientResponse) -> Reply {
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let body = resp.body().limit(64 * 1024 * 1024).await.expect("body");
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// Asserts the OpenAI error shape and returns the error object.
    pub fn error(&self) -> Value {
        let v = self.json();
        let e = v
            .get("error")
            .unwrap_or_else(|| panic!("no `error`: {}", self.body))
            .clone();
        for k in ["message", "type", "param", "code"] {
            assert!(e.get(k).is_some(), "error has no `{k}`: {}", self.body);
        }
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
        e
    }

    /// The `data:` payloads of an SSE body.
    pub fn sse_data(&self) -> Vec<String> {
        self.body
            .split("\n\n")
            .filter_map(|frame| frame.strip_prefix("data: "))
            .map(str::to_owned)
            .collect()
    }
}

pub fn client() -> awc::Client {
    awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish()
}

/// A parsed exposition: every sample with its labels, and the TYPE of every family.
pub struct Metrics {
    pub samples: Vec<(String, HashMap<String, String>, f64)>,
    pub types: HashMap<String, String>,
    pub text: String,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let mut samples = Vec::new();
        let mut types = HashMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (n, t) = rest
                    .split_once(' ')
                    .expect("TYPE line has a name and a type");
                types.insert(n.to_owned(), t.to_owned());
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            samples.push(
                parse_sample(line).unwrap_or_else(|| panic!("malformed sample line: {line}")),
            );
        }
        Metrics {
            samples,
            types,
            text: text.to_owned(),
        }
    }

    /// Sum of the samples named `name` whose labels include all of `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|(_, _, v)| *v).sum()
    }

    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a (String, HashMap<String, String>, f64)> + 'a {
        self.samples.iter().filter(move |(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
    }

    pub fn count(&self, name: &str, labels: &[(&str, &str)]) -> usize {
        self.matching(name, labels).count()
    }

    /// The label names used by samples of `name` (without `le`), asserting that every sample has the same.
    pub fn label_names(&self, name: &str) -> BTreeSet<String> {
        let mut sets = self
            .samples
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, l, _)| {
                l.keys()
                    .filter(|k| *k != "le")
                    .cloned()
                    .collect::<BTreeSet<String>>()
            });
        let first = sets
            .next()
            .unwrap_or_else(|| panic!("no samples of {name}"));
        for s in sets {
            assert_eq!(s, first, "{name} has series with different label sets");
        }
        first
    }
}

/// Parses `name{a="x",b="y\\"z"} 1.5` (text format 0.0.4, with escapes in label values).
fn parse_sample(line: &str) -> Option<(String, HashMap<String, String>, f64)> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_owned();
    let mut labels = HashMap::new();
    let mut rest = &line[name_end..];
    if let Some(mut r) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = r.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = r.find('=')?;
            let key = r[..eq].to_owned();
            let mut chars = r[eq + 1..].strip_prefix('"')?.char_indices();
            let mut value = String::new();
            let end = loop {
                let (i, c) = chars.next()?;
                match c {
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    '"' => break i,
                    c => value.push(c),
                }
            };
            labels.insert(key, value);
            r = &r[eq + 1..][1 + end + 1..];
            r = r.strip_prefix(',').unwrap_or(r);
        }
    }
    let value = match rest.trim() {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some((name, labels, value))
}

pub fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// A config with one upstream model group `gpt-4o` on the mock upstream (plus extra YAML appended).
pub fn upstream_config(mock: &Mock, extra: &str) -> String {
    format!(
        "model_list:\n  - model_name: gpt-4o\n    llm_params:\n      model: openai/gpt-4o-2024\n      api_base: {}\n      api_key: sk-upstream-secret\n      input_cost_per_token: 0.000001\n      output_cost_per_token: 0.000002\n    model_info:\n      id: dep-1\nllm_settings:\n  callbacks: [prometheus]\n{extra}",
        mock.base()
    )
}

pub fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Say hello to the tests"}]})
}

pub fn sha256(s: &str) -> String {
    llm::secret::hash_key(s)
}

/// Waits for the next minute when less than 10 s are left of this one, so that per-minute windows do not
/// roll over in the middle of a test.
pub async fn fresh_minute() {
    minute_with(10.0).await;
}

/// Waits for the next minute when less than `needed` seconds are left of this one.
pub async fn minute_with(needed: f64) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        % 60.0;
    if secs > 60.0 - needed {
        actix_rt::time::sleep(Duration::from_secs_f64(60.5 - secs)).await;
    }
}

/// Scrapes `/metrics` until `ok` holds (events reach the metrics actor a few milliseconds after the
/// responses), or fails after 5 s showing what the last scrape had.
pub async fn metrics_until(gw: &Gateway, what: &str, ok: impl Fn(&Metrics) -> bool) -> Metrics {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = gw.metrics().await;
        if ok(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "metrics never showed {what}");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The Redis the replica tests share: `LLM_TEST_REDIS_URL`, else redis://127.0.0.1:6379. `None` (the test
/// skips) when nothing answers there, except under `CI=true`, where Redis is required.
pub fn redis_url() -> Option<String> {
    let url = std::env::var("LLM_TEST_REDIS_URL").unwrap_or("redis://127.0.0.1:6379".into());
    let addr = url
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap_or("127.0.0.1:6379")
        .to_owned();
    let up = std::net::TcpStream::connect(&addr).is_ok();
    if !up {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "Redis is not answering at {url}; CI needs it"
        );
        eprintln!("Redis is not answering at {url}: skipped");
        return None;
    }
    Some(url)
}

/// The deployment `id` as `/health/deployments` shows it (the gateway must not require a key for it).
pub async fn health(gw: &Gateway, id: &str) -> Value {
    let r = gw.get("/health/deployments", &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["model_id"] == id)
        .cloned()
        .unwrap()
}
