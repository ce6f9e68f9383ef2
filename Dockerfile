# iarnet node image.
#   docker build -t iarnet .
#   docker run --rm -p 50051:50051 iarnet --initial-peers node1:50051
# Build stage: compiles the binary (protos compile with protox: no protoc needed).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
COPY src src
COPY benches benches
COPY config.yaml config.yaml
RUN cargo build --release --locked --bin iarnet

# Runtime stage: small, non-root, the binary as entrypoint.
FROM debian:bookworm-slim AS runtime
RUN useradd --system --uid 10001 --home-dir /var/lib/iarnet --create-home iarnet \
    && mkdir -p /etc/iarnet \
    && chown iarnet /var/lib/iarnet
COPY --from=build /src/target/release/iarnet /usr/local/bin/iarnet
COPY config.yaml /etc/iarnet/config.yaml
USER iarnet
WORKDIR /var/lib/iarnet
ENV IARNET_CONFIG=/etc/iarnet/config.yaml \
    IARNET_DATA_DIR=/var/lib/iarnet/data \
    IARNET_WORKSPACE_DIR=/var/lib/iarnet/workspaces
# 50051: gRPC (PeerService, Admin, health, reflection). 8083: HTTP API.
EXPOSE 50051 8083
ENTRYPOINT ["/usr/local/bin/iarnet"]
