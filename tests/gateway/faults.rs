//! Dependencies that fail: a private PostgreSQL cluster stopped mid-load, a private Redis killed and hung,
//! upstreams that reset, hang, flood or babble, and SIGTERM under load. Nothing may be lost, nothing may
//! hang, every failure shows in `/metrics`. Private servers run on free ports and are never the shared ones.

use crate::support::*;
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MODEL: &str = "model_list:\n  - model_name: m\n    llm_params: {model: mock/m, mock_response: Five words of mock answer, input_cost_per_token: 0.000123, output_cost_per_token: 0.000456}\n";

/// What a successful answer costs, to the micro-dollar, from its usage.
fn micros_of(r: &Reply) -> i64 {
    let u = &r.json()["usage"];
    let usd = u["prompt_tokens"].as_f64().unwrap() * 0.000123
        + u["completion_tokens"].as_f64().unwrap() * 0.000456;
    (usd * 1e6).round() as i64
}

async fn new_key(gw: &Gateway, master: &str) -> String {
    let r = gw
        .post_with(
            "/key/generate",
            &json!({"max_budget": 1000}),
            &[("authorization", &format!("Bearer {master}"))],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["key"].as_str().unwrap().to_owned()
}

async fn ask(gw: &Gateway, key: &str) -> Reply {
    gw.post_with(
        "/v1/chat/completions",
        &chat("m"),
        &[("authorization", &format!("Bearer {key}"))],
    )
    .await
}

/// A free port below the kernel's ephemeral range (32768 and up), where the ports the other tests ask the
/// kernel for never land: a private server stopped and started again finds its port still free.
fn private_port() -> u16 {
    loop {
        let port = rand::random::<u16>() % 15_000 + 15_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

// ---- PostgreSQL ------------------------------------------------------------------------------------------

/// The directory of PostgreSQL's server programs, when installed.
fn pg_bin() -> Option<std::path::PathBuf> {
    let root = std::path::Path::new("/usr/lib/postgresql");
    let mut versions: Vec<_> = std::fs::read_dir(root).ok()?.flatten().collect();
    versions.sort_by_key(|e| e.file_name());
    let bin = versions.last()?.path().join("bin");
    bin.join("initdb").exists().then_some(bin)
}

/// A PostgreSQL cluster of the test's own, on a free port, run as the `postgres` user when the tests run as
/// root (initdb refuses root).
struct PrivatePg {
    bin: std::path::PathBuf,
    dir: std::path::PathBuf,
    port: u16,
}

fn as_postgres(program: &std::path::Path) -> Command {
    let root = is_root();
    let mut c = if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    c.stdout(Stdio::null()).stderr(Stdio::null());
    c
}

/// Whether this process runs as root (from /proc, without libc).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|v| v.split_whitespace().next() == Some("0"))
        })
        .unwrap_or(false)
}

impl PrivatePg {
    /// `None` (the test skips) without PostgreSQL's programs, except under `CI=true`.
    fn start() -> Option<PrivatePg> {
        let Some(bin) = pg_bin() else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "PostgreSQL's server programs are needed in CI"
            );
            eprintln!("no PostgreSQL server programs: skipped");
            return None;
        };
        let dir = scratch_dir().join("pg");
        std::fs::create_dir_all(&dir).unwrap();
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(dir.parent().unwrap())
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown");
        }
        let ok = as_postgres(&bin.join("initdb"))
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-U", "postgres", "--auth=trust", "-N"])
            .status()
            .unwrap()
            .success();
        assert!(ok, "initdb");
        let pg = PrivatePg {
            bin,
            dir,
            port: private_port(),
        };
        pg.up();
        Some(pg)
    }

    /// Starts the server; tries three times (a restart right after an immediate stop can find its port
    /// or shared memory not yet released on a loaded machine), showing the server's log if all fail.
    fn up(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        for attempt in 1..=3 {
            let ok = as_postgres(&self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(self.dir.join("data"))
                .args(["-o", &opts, "-w", "-t", "30", "-l"])
                .arg(self.dir.join("log"))
                .arg("start")
                .status()
                .unwrap()
                .success();
            if ok {
                return;
            }
            let log = std::fs::read_to_string(self.dir.join("log")).unwrap_or_default();
            let tail: String = log.lines().rev().take(15).collect::<Vec<_>>().join("\n");
            assert!(
                attempt < 3,
                "pg_ctl start failed three times; log (newest first):\n{tail}"
            );
            eprintln!("pg_ctl start failed (attempt {attempt}), retrying:\n{tail}");
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// Stops it the hard way (as a crash or a network cut looks to the gateway).
    fn down(&self) {
        let ok = as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .status()
            .unwrap()
            .success();
        assert!(ok, "pg_ctl stop");
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "stop"])
            .status();
        let _ = std::fs::remove_dir_all(self.dir.parent().unwrap());
    }
}

/// The stored spend of a key and the number of spend-log rows, read from the database itself.
async fn stored(url: &str, token: &str) -> (i64, i64) {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let spend: i64 = sqlx::query_scalar("SELECT spend_micros FROM llm_keys WHERE id = $1")
        .bind(token)
        .fetch_one(&pool)
        .await
        .unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM llm_spend_logs WHERE api_key = $1")
        .bind(token)
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    (spend, rows)
}

#[actix_rt::test]
async fn a_database_outage_serves_known_keys_and_loses_no_spend() {
    let Some(pg) = PrivatePg::start() else { return };
    let config = format!(
        "{MODEL}llm_settings:\n  callbacks: [prometheus]\n  service_callback: [prometheus_system]\ngeneral_settings:\n  master_key: sk-master\n  database_timeout: 1\n"
    );
    let gw = Gateway::start_in(scratch_dir(), &config, Some(pg.url())).await;
    let key = new_key(&gw, "sk-master").await;
    let token = sha256(&key);
    let mut expected = 0i64;
    let mut ok = 0i64;
    for _ in 0..5 {
        let r = ask(&gw, &key).await;
        assert_eq!(r.status, 200, "{}", r.body);
        expected += micros_of(&r);
        ok += 1;
    }

    pg.down();
    // Known keys keep being served from memory; their spend waits there.
    for _ in 0..20 {
        let r = ask(&gw, &key).await;
        assert_eq!(r.status, 200, "{}", r.body);
        expected += micros_of(&r);
        ok += 1;
    }
    // Admin calls fail fast and say why.
    let started = Instant::now();
    let r = gw
        .admin("/key/generate", &json!({"key_alias": "during-outage"}))
        .await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.error()["message"]
        .as_str()
        .unwrap()
        .contains("database is unavailable"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // A key this replica has never seen cannot be checked: 503, not 401.
    let r = ask(&gw, "sk-never-seen-before-0123456789").await;
    assert_eq!(r.status, 503, "{}", r.body);
    // The outage is visible.
    metrics_until(&gw, "postgres failures", |m| {
        m.sum("llm_postgres_fails_total", &[]) > 0.0
    })
    .await;

    pg.up();
    // Everything settled during the outage is written, exactly once.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (spend, rows) = stored(&pg.url(), &token).await;
        if spend == expected && rows == ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stored spend {spend} (expected {expected}), rows {rows} (expected {ok})"
        );
        actix_rt::time::sleep(Duration::from_millis(200)).await;
    }
    // And stays exact: nothing is written twice afterwards.
    actix_rt::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(stored(&pg.url(), &token).await, (expected, ok));
    assert_eq!(
        gw.admin("/key/generate", &json!({})).await.status,
        200,
        "admin calls work again"
    );
}

#[actix_rt::test]
async fn sigterm_under_load_finishes_in_flight_requests_and_loses_nothing() {
    let config = "model_list:\n  - model_name: m\n    llm_params: {model: mock/m, mock_response: Five words of mock answer, mock_latency_ms: 1500, input_cost_per_token: 0.000123, output_cost_per_token: 0.000456}\nllm_settings:\n  callbacks: [prometheus]\ngeneral_settings:\n  master_key: sk-master\n".to_string();
    let gw = Gateway::start(&config).await;
    let key = new_key(&gw, "sk-master").await;
    let mut waiting = Vec::new();
    // One client for all (its connector lives as long as the test).
    let http = client();
    for _ in 0..30 {
        let (url, key, http) = (gw.url("/v1/chat/completions"), key.clone(), http.clone());
        waiting.push(actix_rt::spawn(async move {
            let r = http
                .post(url)
                .insert_header(("authorization", format!("Bearer {key}")))
                .send_json(&chat("m"))
                .await;
            match r {
                Ok(mut resp) => {
                    let status = resp.status().as_u16();
                    let body = resp.body().await.unwrap_or_default();
                    Some((status, String::from_utf8_lossy(&body).into_owned()))
                }
                // Sent after the listener closed: never admitted, never charged.
                Err(e) => {
                    eprintln!("request not served: {e}");
                    None
                }
            }
        }));
    }
    actix_rt::time::sleep(Duration::from_millis(500)).await;
    let pid = gw.pid();
    assert!(Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let (mut expected, mut ok) = (0i64, 0i64);
    for w in waiting {
        if let Some((status, body)) = w.await.unwrap() {
            assert_eq!(status, 200, "an admitted request finishes: {body}");
            let reply = Reply {
                status,
                headers: Default::default(),
                body,
            };
            expected += micros_of(&reply);
            ok += 1;
        }
    }
    assert!(ok > 0, "requests were in flight at the signal");
    let gw = gw.restart_after_exit(&config).await;
    let info = gw.admin_get(&format!("/key/info?key={key}")).await.json();
    let spend = info["info"]["spend"].as_f64().unwrap();
    assert_eq!(
        (spend * 1e6).round() as i64,
        expected,
        "stored spend is the sum of what was served"
    );
    let logs = gw
        .admin_get(&format!("/spend/logs?api_key={}", sha256(&key)))
        .await
        .json();
    assert_eq!(logs["total"].as_i64().unwrap(), ok, "{logs}");
}

// ---- Redis -----------------------------------------------------------------------------------------------

/// A `redis-server` of the test's own on a free port.
struct PrivateRedis {
    child: Option<Child>,
    port: u16,
}

impl PrivateRedis {
    fn start() -> Option<PrivateRedis> {
        if Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
        {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "redis-server is needed in CI"
            );
            eprintln!("no redis-server: skipped");
            return None;
        }
        let mut r = PrivateRedis {
            child: None,
            port: private_port(),
        };
        r.up();
        Some(r)
    }

    fn up(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        assert!(Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success());
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.signal("-CONT");
        }
        self.kill();
    }
}

/// The current minute, as the gateway numbers its windows.
fn this_minute() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 60
}

/// What every replica counted for `token` this minute, read from Redis.
async fn redis_count(url: &str, token: &str) -> u64 {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let minute = this_minute();
    let vals: Vec<u64> = redis::cmd("HVALS")
        .arg(format!("llm:rlh:k:{token}:{minute}:r"))
        .query_async(&mut conn)
        .await
        .unwrap();
    vals.iter().sum()
}

#[actix_rt::test]
async fn a_redis_outage_or_hang_never_stops_requests_and_counts_nothing_twice() {
    let Some(mut redis) = PrivateRedis::start() else {
        return;
    };
    // The counts compared below are per minute: start early in one, with time for every phase.
    minute_with(40.0).await;
    let config = format!(
        "{MODEL}llm_settings:\n  callbacks: [prometheus]\n  service_callback: [prometheus_system]\ngeneral_settings:\n  master_key: sk-master\n  redis_url: {}\n",
        redis.url()
    );
    let gw = Gateway::start(&config).await;
    let r = gw.admin("/key/generate", &json!({"rpm_limit": 1000})).await;
    let key = r.json()["key"].as_str().unwrap().to_owned();
    let token = sha256(&key);
    // A key whose lease runs out during the outage: rpm 10, one replica, so its first slice is 5.
    let r = gw.admin("/key/generate", &json!({"rpm_limit": 10})).await;
    let mid = r.json()["key"].as_str().unwrap().to_owned();
    assert_eq!(ask(&gw, &mid).await.status, 200);
    let mut sent = 0u64;
    for _ in 0..5 {
        assert_eq!(ask(&gw, &key).await.status, 200);
        sent += 1;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while redis_count(&redis.url(), &token).await != sent {
        assert!(Instant::now() < deadline, "counts reach Redis");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }

    // Hung (SIGSTOP): requests are served at their usual pace; the calls time out and are counted.
    redis.signal("-STOP");
    for _ in 0..5 {
        let started = Instant::now();
        assert_eq!(ask(&gw, &key).await.status, 200);
        assert!(started.elapsed() < Duration::from_secs(2));
        sent += 1;
    }
    for _ in 0..2 {
        assert_eq!(ask(&gw, &mid).await.status, 200);
    }
    metrics_until(&gw, "redis timeouts", |m| {
        m.sum("llm_redis_fails_total", &[("error_class", "TimeoutError")]) > 0.0
    })
    .await;
    redis.signal("-CONT");

    // Gone (killed): the same; and limits still hold, on this replica's own count (the documented choice:
    // each replica enforces the limit alone until Redis is back).
    redis.kill();
    for _ in 0..5 {
        assert_eq!(ask(&gw, &key).await.status, 200);
        sent += 1;
    }
    for _ in 0..3 {
        assert_eq!(ask(&gw, &mid).await.status, 200);
    }
    let r = gw.admin("/key/generate", &json!({"rpm_limit": 3})).await;
    let small = r.json()["key"].as_str().unwrap().to_owned();
    for _ in 0..3 {
        assert_eq!(ask(&gw, &small).await.status, 200);
    }
    let r = ask(&gw, &small).await;
    assert_eq!(r.status, 429, "{}", r.body);
    metrics_until(&gw, "redis failures", |m| {
        m.sum("llm_redis_fails_total", &[]) > 1.0
    })
    .await;

    // Back (empty, as a restarted Redis without persistence is): the replica writes its absolute count
    // again; nothing is added twice.
    redis.up();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let n = redis_count(&redis.url(), &token).await;
        if n == sent {
            break;
        }
        assert!(
            n < sent && Instant::now() < deadline,
            "Redis counts {n} of {sent} requests"
        );
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    actix_rt::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(redis_count(&redis.url(), &token).await, sent);

    // The lease counter of the rpm-10 key: one request before the outage took a slice of 5; five more were
    // admitted while Redis was away (counted on this replica). The first request asked after it reports
    // the one beyond the slice and takes half of what is left: 6 admitted + 2 granted, every admission
    // counted once, in a counter Redis had lost.
    actix_rt::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(ask(&gw, &mid).await.status, 200);
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let minute = this_minute();
    let counters: Vec<String> = redis::cmd("KEYS")
        .arg(format!("llm:q:*:k:{}:r:{minute}", sha256(&mid)))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(counters.len(), 1, "{counters:?}");
    let claimed: u64 = redis::cmd("GET")
        .arg(&counters[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(claimed, 8);
}

// ---- upstreams -------------------------------------------------------------------------------------------

/// A raw TCP upstream on a free port that handles each connection with `serve` (on its own thread).
fn raw_upstream(serve: fn(std::net::TcpStream)) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || serve(conn));
        }
    });
    port
}

/// Reads a request's head (enough for these upstreams, which never look at the body).
fn read_head(conn: &mut std::net::TcpStream) {
    let mut buf = [0u8; 8192];
    let mut seen = Vec::new();
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

#[actix_rt::test]
async fn upstream_faults_end_in_clean_errors_within_the_timeouts() {
    let mock = Mock::start();
    // Resets the connection before any header.
    let reset = raw_upstream(|mut c| {
        read_head(&mut c);
        // Linger 0: closing sends a reset, not a clean end.
        let _ = socket2::SockRef::from(&c).set_linger(Some(Duration::ZERO));
    });
    // Accepts and never answers.
    let hung = raw_upstream(|mut c| {
        read_head(&mut c);
        std::thread::sleep(Duration::from_secs(30));
    });
    // Answers 200 with a 72 MiB body.
    let huge = raw_upstream(|mut c| {
        read_head(&mut c);
        let len = 72 * 1024 * 1024;
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\r\n"
        );
        if c.write_all(head.as_bytes()).is_err() {
            return;
        }
        let chunk = vec![b' '; 1024 * 1024];
        for _ in 0..72 {
            if c.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    let entry = |name: &str, base: String, model: &str| {
        format!(
            "  - model_name: {name}\n    llm_params: {{model: openai/{model}, api_base: \"{base}\", api_key: sk-up, timeout: 2}}\n    model_info: {{id: {name}}}\n"
        )
    };
    let raw = |port: u16| format!("http://127.0.0.1:{port}/v1");
    let config = format!(
        "model_list:\n{}{}{}{}{}llm_settings:\n  callbacks: [prometheus]\n",
        entry("reset", raw(reset), "x"),
        entry("hung", raw(hung), "x"),
        entry("huge", raw(huge), "x"),
        entry("malformed", mock.base(), "bad"),
        entry("cut", mock.base(), "cut"),
    );
    mock.rule(json!({"model": "bad", "malformed": true})).await;
    mock.rule(json!({"model": "cut", "cut_stream_after": 2}))
        .await;
    let gw = Gateway::start(&config).await;
    for (group, status) in [
        ("reset", 500..600),
        ("hung", 400..600),
        ("huge", 500..600),
        ("malformed", 500..600),
    ] {
        let started = Instant::now();
        let r = gw.post("/v1/chat/completions", &chat(group)).await;
        assert!(
            status.contains(&r.status),
            "{group}: {} {}",
            r.status,
            r.body
        );
        r.error();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{group} took {:?}",
            started.elapsed()
        );
    }
    // A stream cut halfway ends with an error frame after what was generated.
    let mut body = chat("cut");
    body["stream"] = json!(true);
    let r = gw.post("/v1/chat/completions", &body).await;
    let frames = r.sse_data();
    assert!(frames.len() >= 2, "{frames:?}");
    assert!(frames.last().unwrap().contains("\"error\""), "{frames:?}");
    // Each deployment's health shows its failure.
    let h = gw.get("/health/deployments", &[]).await.json();
    for d in h["deployments"].as_array().unwrap() {
        assert!(d["failures"].as_u64().unwrap() >= 1, "{d}");
    }
    assert_eq!(gw.get("/health/liveliness", &[]).await.status, 200);
}

/// `/health/readiness`'s view of Redis on `gw`: (reachable, replicas).
async fn redis_view(gw: &Gateway) -> (bool, u64) {
    let r = gw.get("/health/readiness", &[]).await.json();
    (
        r["redis"]["reachable"].as_bool().unwrap(),
        r["redis"]["replicas"].as_u64().unwrap(),
    )
}

async fn until_view(gw: &Gateway, want: (bool, u64)) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = redis_view(gw).await;
        if seen == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "Redis view {seen:?}, waiting for {want:?}"
        );
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix_rt::test]
async fn while_redis_is_unreachable_shared_limits_are_divided_or_refused_as_configured() {
    let Some(mut redis) = PrivateRedis::start() else {
        return;
    };
    // Every request below counts in one minute: start early in one.
    minute_with(30.0).await;
    let config = |mode: &str| {
        format!(
            "{MODEL}llm_settings:\n  callbacks: [prometheus]\ngeneral_settings:\n  master_key: sk-master\n  redis_url: {}\n  redis_outage_mode: {mode}\n",
            redis.url()
        )
    };
    let divide = Gateway::start(&config("divide")).await;
    // Replicas: on PostgreSQL one database; on SQLite each its own file, holding the same key.
    let (refuse, shared_db) = match divide.replica(&config("refuse")).await {
        Some(g) => (g, true),
        None => (Gateway::start(&config("refuse")).await, false),
    };
    // 10 requests a minute.
    let key = format!("sk-outage-{}", std::process::id());
    for gw in [&divide, &refuse] {
        let r = gw
            .admin("/key/generate", &json!({"key": key, "rpm_limit": 10}))
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        if shared_db {
            break;
        }
    }
    let free = new_key(&refuse, "sk-master").await;
    until_view(&divide, (true, 2)).await;
    until_view(&refuse, (true, 2)).await;

    redis.kill();
    until_view(&divide, (false, 2)).await;
    until_view(&refuse, (false, 2)).await;
    // divide: this replica holds 10 / 2 on its own count.
    let mut admitted = 0;
    for _ in 0..10 {
        match ask(&divide, &key).await.status {
            200 => admitted += 1,
            429 => {}
            other => panic!("status {other}"),
        }
    }
    assert_eq!(admitted, 5, "half the limit on each of two replicas");
    // refuse: a limited request gets 503; one without a limit is served.
    let r = ask(&refuse, &key).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.error()["message"]
        .as_str()
        .unwrap()
        .contains("redis_outage_mode"));
    assert_eq!(ask(&refuse, &free).await.status, 200);

    // Back: counting is shared again.
    redis.up();
    until_view(&refuse, (true, 2)).await;
    assert_eq!(ask(&refuse, &key).await.status, 200);
}
