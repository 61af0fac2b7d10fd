//! The upstream HTTP client every HTTP provider shares: one awc client per worker thread (awc is `!Send`)
//! with pooled keep-alive connections and `TCP_NODELAY` on every upstream socket (without it a kept-alive
//! request waits on Nagle's algorithm), no redirects.

use actix_rt::net::TcpStream;
use actix_service::Service;
use actix_tls::connect::{ConnectError, ConnectInfo, Connection, ConnectorService};
use actix_web::http::Uri;
use futures_util::future::LocalBoxFuture;
use std::time::Duration;

/// Connections kept per worker, across all upstream hosts.
const POOL_LIMIT: usize = 1024;
/// How long an idle upstream connection stays in the pool: under the 5 s idle timeout of common upstream
/// servers (uvicorn, which vLLM and most Python servers run on; actix-web), so the gateway does not send a
/// request on a connection the server is closing, which would fail it as a connection error against a
/// healthy deployment.
const POOL_KEEP_ALIVE: Duration = Duration::from_secs(4);
/// TCP connect (and TLS handshake) limit.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest upstream body read into memory (non-streaming responses and error bodies).
pub const MAX_UPSTREAM_BODY_BYTES: usize = 64 * 1024 * 1024;

/// Wraps the TCP connector to set `TCP_NODELAY` on each new upstream socket.
#[derive(Clone)]
struct NoDelay(ConnectorService);

impl Service<ConnectInfo<Uri>> for NoDelay {
    type Response = Connection<Uri, TcpStream>;
    type Error = ConnectError;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    actix_service::always_ready!();

    fn call(&self, req: ConnectInfo<Uri>) -> Self::Future {
        let fut = self.0.call(req);
        Box::pin(async move {
            let conn = fut.await?;
            // A socket option failure only costs latency; the connection is still usable.
            let _ = conn.io_ref().set_nodelay(true);
            Ok(conn)
        })
    }
}

fn build_client() -> awc::Client {
    let connector = awc::Connector::new()
        .connector(NoDelay(ConnectorService::default()))
        .limit(POOL_LIMIT)
        .conn_keep_alive(POOL_KEEP_ALIVE)
        .timeout(CONNECT_TIMEOUT);
    // Redirects are not followed: an upstream (or whoever controls its DNS) must not be able to send the
    // request, with its body, to another host; a 3xx answer is an upstream error like any other.
    awc::Client::builder()
        .connector(connector)
        .disable_timeout()
        .disable_redirects()
        .finish()
}

thread_local! {
    static CLIENT: awc::Client = build_client();
}

/// This worker's upstream client (a cheap handle to the shared pool).
pub fn client() -> awc::Client {
    CLIENT.with(|c| c.clone())
}
