# Build stage: compile the release binary.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY migrations migrations
COPY assets assets
COPY benches benches
COPY examples examples
COPY tests tests
RUN cargo build --release --locked --bin bouncer

# Runtime stage: the binary, CA roots for the AWS SDK, and a non-root user.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /data --create-home bouncer
COPY --from=build /src/target/release/bouncer /usr/local/bin/bouncer
USER bouncer
WORKDIR /data
# The public listener (POST /sns, /healthz, /readyz) on every interface; the
# admin listener (/v1, /metrics) on the container's own loopback, where only
# `docker exec` reaches it. To expose it, run with
# ADMIN_LISTEN_ADDR=0.0.0.0:8081 and API_TOKENS=name:token (start-up refuses
# the one without the other) and publish 8081 on a private network only.
ENV LISTEN_ADDR=0.0.0.0:8080 \
    ADMIN_LISTEN_ADDR=127.0.0.1:8081 \
    DATABASE_URL=sqlite:/data/bouncer.db \
    SPOOL_PATH=/data/bouncer.spool \
    LOG_FORMAT=json
VOLUME ["/data"]
EXPOSE 8080
ENTRYPOINT ["bouncer"]
CMD ["serve"]
