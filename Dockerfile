# syntax=docker/dockerfile:1
# The gateway as a small, non-root container image.
#   docker build -t gateway .
#   docker run --rm -p 8080:8080 -v gateway-data:/data gateway
# Configure it with a mounted /etc/gateway/gateway.yaml and/or GATEWAY_<PATH> variables
# (README: "Running in a container").

FROM rust:1-bookworm AS builder
WORKDIR /src
# Dependencies first, against a dummy crate, so a change under src/ does not rebuild them.
COPY Cargo.toml Cargo.lock ./
# Every target the manifest declares must exist for cargo to read it (the test and the bench).
RUN mkdir -p src tests/it benches \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs tests/it/main.rs benches/hot_path.rs \
 && cargo build --release --locked \
 && rm -rf src
COPY src ./src
# COPY keeps the files' old timestamps; make sure cargo sees the real sources as newer than the dummy.
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked \
 && mkdir -p /out/data \
 && cp target/release/gateway /out/gateway
# The image's own config keeps the store in the /data volume. It is written into the file, not
# set with GATEWAY_STORE__REDB__PATH, so a mounted config that picks store.postgres is not
# given a redb path as well (that is refused as ambiguous).
COPY gateway.yaml ./
# Containers sit behind a load balancer or a Kubernetes Service: keep serving for 5s after
# SIGTERM while /readyz already answers 503 (shutdown_delay), so no new connection is refused.
RUN sed -e 's#path: data/gateway.redb #path: /data/gateway.redb#' \
        -e 's#^shutdown_delay: 0s #shutdown_delay: 5s #' gateway.yaml > /out/gateway.yaml \
 && grep -q 'path: /data/gateway.redb' /out/gateway.yaml \
 && grep -q '^shutdown_delay: 5s' /out/gateway.yaml

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/gateway /usr/local/bin/gateway
COPY --from=builder /out/gateway.yaml /etc/gateway/gateway.yaml
# The store and the generated self-signed certificate live in /data, owned by the nonroot user.
COPY --from=builder --chown=65532:65532 /out/data /data
ENV GATEWAY_CONFIG=/etc/gateway/gateway.yaml \
    GATEWAY_LISTEN__HTTP=0.0.0.0:8080 \
    GATEWAY_LISTEN__HTTPS=0.0.0.0:8443 \
    GATEWAY_TLS__CERT=/data/certs/localhost.pem \
    GATEWAY_TLS__KEY=/data/certs/localhost-key.pem \
    GATEWAY_TLS__SELF_SIGNED=true \
    GATEWAY_LOG__FORMAT=json
USER nonroot
VOLUME ["/data"]
EXPOSE 8080 8443
# distroless has no shell or curl: the binary checks its own /healthz (HTTP, else HTTPS).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/gateway", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/gateway"]
CMD ["serve"]
