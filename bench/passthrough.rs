//! Calibration for `bench/run.sh`: the least an actix-web + awc proxy can do. It forwards the request body
//! to the upstream and the upstream's body back, with no parsing, auth, routing or metrics; one worker,
//! pooled keep-alive upstream connections, TCP_NODELAY on both sides. The gateway's throughput is compared
//! with this as well as with calling the upstream directly.
//!
//! `cargo run --release --example passthrough -- <listen-port> <upstream-url>`

use actix_web::{web, App, HttpResponse, HttpServer};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|p| p.parse().ok()).unwrap_or(14001);
    let upstream: String = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:18080/v1/chat/completions".into());
    actix_web::rt::System::new().block_on(async move {
        HttpServer::new(move || {
            let upstream = upstream.clone();
            App::new().default_service(web::to(move |body: web::Bytes| {
                let upstream = upstream.clone();
                async move {
                    let client = llm::providers::http::client();
                    match client
                        .post(upstream)
                        .insert_header(("content-type", "application/json"))
                        .send_body(body)
                        .await
                    {
                        Ok(mut resp) => match resp.body().await {
                            Ok(b) => HttpResponse::Ok().content_type("application/json").body(b),
                            Err(_) => HttpResponse::BadGateway().finish(),
                        },
                        Err(_) => HttpResponse::BadGateway().finish(),
                    }
                }
            }))
        })
        .workers(1)
        .tcp_nodelay(true)
        .bind(("127.0.0.1", port))?
        .run()
        .await
    })
}
