# syntax=docker/dockerfile:1
# The gateway image. The build step is the same cargo command CI's end-to-end suite runs
# (scripts/e2e: `cargo build --release --locked --bins`); scripts/check-docker keeps the two identical.

FROM rust:1.95.0-slim-bookworm AS build
WORKDIR /src
# Packages come from the Debian release the base image pins; their patch versions move with security updates.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends pkg-config libssl-dev \
    && rm -rf /var/lib/apt/lists/*
COPY Cargo.toml Cargo.lock ./
# The build's environment (the bundled SQLite's compile flags).
COPY .cargo ./.cargo
COPY src ./src
COPY bench ./bench
COPY data ./data
RUN cargo build --release --locked --bins

FROM debian:12.8-slim
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 llm \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home llm \
    && mkdir -p /app/data \
    && chown -R llm:llm /app
COPY --from=build /src/target/release/llm /src/target/release/llm-mock /usr/local/bin/
COPY --chown=llm:llm config/proxy_config.yaml /app/config.yaml
WORKDIR /app
USER 10001:10001
EXPOSE 4000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:4000/health/liveliness"]
ENTRYPOINT ["llm", "--config", "/app/config.yaml"]
CMD ["--host", "0.0.0.0", "--port", "4000"]
